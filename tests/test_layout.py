"""Package layout contracts: training needs neither MD nor the physical checks of validation."""

import json
import subprocess
import sys

_ALLOWED_VALIDATE = {"mlpjax.validate", "mlpjax.validate.metrics"}


def _imported_by(statement: str) -> list[str]:
    code = f"import json, sys; {statement}; print(json.dumps(sorted(m for m in sys.modules if m.startswith('mlpjax'))))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_training_imports_no_md_and_no_physical_validation():
    loaded = _imported_by("import mlpjax.training")
    assert "mlpjax.training" in loaded
    md = [m for m in loaded if m == "mlpjax.md" or m.startswith("mlpjax.md.")]
    replicas = [m for m in loaded if m == "mlpjax.replicas" or m.startswith("mlpjax.replicas.")]
    validate = [m for m in loaded if (m == "mlpjax.validate" or m.startswith("mlpjax.validate.")) and m not in _ALLOWED_VALIDATE]
    assert not md and not replicas and not validate, (md, replicas, validate)
