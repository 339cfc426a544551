"""Peer timing for benchmarks/model_speed.py: mace-torch's MACE with the hyperparameters of
mlpjax's MACEConfig, energy + forces on the same structures. Runs in a separate interpreter
(torch and mace-torch are not mlpjax dependencies):

    /path/to/peer-venv/bin/python benchmarks/peers/mace_torch_speed.py spec.json

Prints one JSON line: {"version": ..., "sizes": [{"n_atoms", "inference_s", "compile_s"}], "n_params",
"peak_rss_MB"} (compile_s: the first call, torch has no compilation step in eager mode; peak_rss_MB:
the process's peak resident set size, which includes torch itself).
Hyperparameter mapping (mlpjax → mace-torch): features, hidden_l_max → hidden_irreps
"Fx0e + Fx1o + ..."; l_max → max_ell; correlation; num_bessel; envelope_p →
num_polynomial_cutoff; radial_hidden → radial_MLP; readout_hidden → MLP_irreps "Hx0e";
interactions → num_interactions; RealAgnosticResidualInteractionBlock (first layer
RealAgnosticInteractionBlock), SiLU gate — mace-torch's standard MACE.
"""

import importlib.metadata
import json
import os
import resource
import sys
import time

# e3nn (torch) loads its own packaged constants.pt with torch.load; torch >= 2.6 defaults to
# weights_only=True, which rejects that file. It ships inside the installed e3nn package.
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

import numpy as np
import torch
from ase.io import read
from e3nn import o3
from mace import data as mace_data
from mace import modules
from mace.tools import torch_geometric, utils


def main(spec_path):
    spec = json.load(open(spec_path))
    c = spec["config"]
    torch.set_default_dtype(torch.float32)
    z_table = utils.AtomicNumberTable([29])
    hidden = " + ".join(f"{c['features']}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(c["hidden_l_max"] + 1))
    model = modules.MACE(
        r_max=spec["cutoff"],
        num_bessel=c["num_bessel"],
        num_polynomial_cutoff=c["envelope_p"],
        max_ell=c["l_max"],
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
        num_interactions=c["interactions"],
        num_elements=1,
        hidden_irreps=o3.Irreps(hidden),
        MLP_irreps=o3.Irreps(f"{c['readout_hidden']}x0e"),
        atomic_energies=np.zeros(1),
        avg_num_neighbors=spec["avg_num_neighbors"],
        atomic_numbers=[29],
        correlation=c["correlation"],
        gate=torch.nn.functional.silu,
        radial_MLP=list(c["radial_hidden"]),
    ).eval()
    device = spec.get("device", "cpu")  # "cuda" when the runner is asked for a GPU
    model = model.to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sizes = []
    for path, reps in zip(spec["structures"], spec["reps"]):
        atoms = read(path)
        cfg = mace_data.config_from_atoms(atoms)
        ds = [mace_data.AtomicData.from_config(cfg, z_table=z_table, cutoff=spec["cutoff"])]
        batch = next(iter(torch_geometric.dataloader.DataLoader(ds, batch_size=1, shuffle=False))).to(device).to_dict()
        t = time.perf_counter()
        model(batch, compute_force=True, compute_stress=False)
        sync()
        first = time.perf_counter() - t
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            model(batch, compute_force=True, compute_stress=False)
            sync()
            times.append(time.perf_counter() - t)
        sizes.append({"n_atoms": len(atoms), "inference_s": float(np.median(times)), "compile_s": first})
        print(f"  mace-torch N={len(atoms)}: {np.median(times) * 1e3:.1f} ms", file=sys.stderr, flush=True)
    print(json.dumps({"version": importlib.metadata.version("mace-torch"), "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "hidden_irreps": hidden, "sizes": sizes,
                      "n_params": int(sum(p.numel() for p in model.parameters())),
                      "peak_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "device": device,
                      "peak_device_MB": torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None}))


if __name__ == "__main__":
    main(sys.argv[1])
