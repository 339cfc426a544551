"""Peer timing for ``python -m benchmarks.run``: InstaDeep's mlip (JAX) MACE and NequIP with the
hyperparameters of mlpjax's configs, energy + forces on the same structures, and NVE MD steps/s
through mlip's own jax-md engine. Runs in mlip's own venv (``benchmarks/peers/setup.sh``), never in
mlpjax's environment (mlip brings its own jax):

    $MLPJAX_PEERS/mlip/bin/python benchmarks/peers/mlip_speed.py spec.json

Prints one JSON line: {"version", "jax", "models": {name: {"hyperparameters", "n_params", "sizes":
[{"n_atoms", "n_edges", "inference_s", "compile_s", "xla_temp_MB"}], "md": {...}}}, "peak_rss_MB"}.

API used (mlip 0.2.5, read from its source): ``Mace(config=Mace.Config(...), dataset_info=
DatasetInfo(...))`` → ``ForceField.from_mlip_network`` (random parameters, energy + forces by
``ConservativePredictor``); the graph built as mlip's own ASE calculator builds it
(``ChemicalSystem.from_ase_atoms`` → ``Graph.from_chemical_system`` → ``dynamically_batch`` with one
padding graph); ``jax.jit(force_field.calculate)`` timed with ``jax.block_until_ready``. MD:
``JaxMDSimulationEngine(atoms, force_field, JaxMDSimulationConfig(md_integrator=NVE_VELOCITY_VERLET,
...))``, ``engine.run()``; steps/s from the per-episode compute times mlip passes to its loggers
(``state.compute_time_seconds``), the first episode (compilation) left out.

Hyperparameter mapping (mlpjax → mlip):
  MACE:   features → num_channels; interactions → num_layers; l_max → l_max; hidden_l_max →
          node_symmetry; correlation; num_bessel → num_rbf; radial_hidden → radial_mlp_hidden;
          readout_hidden → readout_irreps ("Hx0e", "0e"); polynomial envelope p = 5 (both).
  NequIP: features, l_max, full_parity=False → target_irreps "Fx0e + Fx1o + Fx2e ..."; l_max;
          num_layers; num_bessel → num_rbf; radial_hidden × radial_layers → radial_mlp_hidden.
"""

import importlib.metadata
import json
import resource
import sys
import time

import jax
import numpy as np
from ase.io import read


def _median(fn, reps):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def _network(name, c, cutoff, avg_num_neighbors):
    from mlip.data import DatasetInfo
    from mlip.models import Mace, Nequip

    info = DatasetInfo(atomic_energies_map={29: 0.0}, graph_cutoff_angstrom=cutoff,
                       avg_num_neighbors=avg_num_neighbors, avg_r_min_angstrom=2.5)
    if name == "mace":
        cfg = Mace.Config(num_layers=c["interactions"], num_channels=c["features"], l_max=c["l_max"],
                          node_symmetry=c["hidden_l_max"], correlation=c["correlation"], num_rbf=c["num_bessel"],
                          radial_mlp_hidden=list(c["radial_hidden"]),
                          readout_irreps=(f"{c['readout_hidden']}x0e", "0e"))
        return Mace(config=cfg, dataset_info=info), cfg
    if name == "nequip":
        if c.get("full_parity"):
            irreps = " + ".join(f"{c['features']}x{l}{p}" for l in range(c["l_max"] + 1) for p in ("eo" if l % 2 == 0 else "oe"))
        else:
            irreps = " + ".join(f"{c['features']}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(c["l_max"] + 1))
        cfg = Nequip.Config(num_layers=c["num_layers"], target_irreps=irreps, l_max=c["l_max"], num_rbf=c["num_bessel"],
                            radial_mlp_hidden=[c["radial_hidden"]] * c["radial_layers"])
        return Nequip(config=cfg, dataset_info=info), cfg
    raise ValueError(f"mlip worker: no mapping for model {name!r}")


def _graph(atoms, cutoff):
    """The padded batch exactly as mlip's MLIPForceFieldASECalculator builds it."""
    from mlip.data.chemical_system import ChemicalSystem
    from mlip.data.helpers.dynamically_batch import dynamically_batch
    from mlip.graph import Graph
    from mlip.graph.edge_ordering import DEFAULT_EDGE_ORDERING

    graph = Graph.from_chemical_system(ChemicalSystem.from_ase_atoms(atoms, get_property_fields=False), cutoff,
                                       ordering=DEFAULT_EDGE_ORDERING)
    n_edges = len(graph.senders)
    batch = next(dynamically_batch([graph], n_node=len(atoms) + 1, n_edge=n_edges + 1, n_graph=2))
    return batch, n_edges


def _md(ff, atoms, md):
    from mlip.simulation.configs.jax_md_config import JaxMDSimulationConfig
    from mlip.simulation.enums import MDIntegrator
    from mlip.simulation.jax_md.jax_md_simulation_engine import JaxMDSimulationEngine

    steps = md["chunk_steps"] * md["chunks"]
    cfg = JaxMDSimulationConfig(md_integrator=MDIntegrator.NVE_VELOCITY_VERLET, num_steps=steps,
                                num_episodes=md["chunks"], snapshot_interval=md["chunk_steps"],
                                timestep_fs=md["timestep_fs"], temperature_kelvin=md["temperature_K"],
                                edge_capacity_multiplier=1.25)
    t = time.perf_counter()
    engine = JaxMDSimulationEngine(atoms, ff, cfg)
    setup_s = time.perf_counter() - t
    episode = []

    def log(state):
        episode.append(state.compute_time_seconds - sum(episode))

    engine.attach_logger(log)
    t = time.perf_counter()
    engine.run()
    run_s = time.perf_counter() - t
    per_step = [e / md["chunk_steps"] for e in episode[1:]] or [e / md["chunk_steps"] for e in episode]
    return {"n_atoms": len(atoms), "steps": steps, "chunk_steps": md["chunk_steps"], "setup_s": setup_s,
            "run_s": run_s, "first_chunk_s": episode[0] if episode else float("nan"),
            "steps_per_s": 1.0 / float(np.median(per_step)), "T_final_K": float(np.asarray(engine.state.temperature)[-1])}


def main(spec_path):
    from mlip.models import ForceField

    spec = json.load(open(spec_path))
    cutoff = spec["cutoff"]
    out = {"version": importlib.metadata.version("mlip"), "jax": jax.__version__,
           "device": str(jax.devices()[0].device_kind), "models": {}}
    for name, c in spec["models"].items():
        try:
            network, cfg = _network(name, c, cutoff, spec["avg_num_neighbors"])
            ff = ForceField.from_mlip_network(network, seed=0)
            entry = {"hyperparameters": json.loads(cfg.model_dump_json()),
                     "n_params": int(sum(np.size(x) for x in jax.tree_util.tree_leaves(ff.params))), "sizes": []}
            calc = jax.jit(ff.calculate)
            for path, reps in zip(spec["structures"], spec["reps"]):
                atoms = read(path)
                try:  # one size failing (out of memory at 4,096 atoms on a CPU) keeps the others
                    batch, n_edges = _graph(atoms, cutoff)
                    t = time.perf_counter()
                    compiled = calc.lower(batch).compile()
                    mem = compiled.memory_analysis()
                    jax.block_until_ready(compiled(batch))
                    compile_s = time.perf_counter() - t
                    row = {"n_atoms": len(atoms), "n_edges": n_edges, "compile_s": compile_s,
                           "inference_s": _median(lambda: compiled(batch).nodes.forces, reps),
                           "xla_temp_MB": getattr(mem, "temp_size_in_bytes", float("nan")) / 2**20}
                except Exception as err:
                    row = {"n_atoms": len(atoms),
                           "error": f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"}
                    print(f"  mlip {name} N={len(atoms)}: failed: {row['error']}", file=sys.stderr, flush=True)
                    entry["sizes"].append(row)
                    continue
                entry["sizes"].append(row)
                print(f"  mlip {name} N={len(atoms)}: {row['inference_s'] * 1e3:.1f} ms (compile {compile_s:.1f} s)",
                      file=sys.stderr, flush=True)
            if spec.get("md") and name in spec["md"].get("models", []):
                entry["md"] = _md(ff, read(spec["md"]["structure"]), spec["md"])
                print(f"  mlip {name} MD N={entry['md']['n_atoms']}: {entry['md']['steps_per_s']:.3g} steps/s",
                      file=sys.stderr, flush=True)
        except Exception as err:  # one model failing keeps the others
            entry = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"}
            print(f"  mlip {name}: failed: {entry['error']}", file=sys.stderr, flush=True)
        out["models"][name] = entry
    out["peak_rss_MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
