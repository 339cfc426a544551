#!/usr/bin/env bash
# Virtual environments for the peer implementations timed by `python -m benchmarks.run`
# (kept out of mlpjax's environment: mlip brings its own jax, mace-torch brings torch).
#
#   bash benchmarks/peers/setup.sh            # both peers
#   bash benchmarks/peers/setup.sh mlip       # one of: mlip, mace-torch
#   MLPJAX_PEERS=/somewhere bash benchmarks/peers/setup.sh
#
# Creates $MLPJAX_PEERS/<peer>/ (default ~/.cache/mlpjax-peers) with its own python; idempotent:
# a venv whose packages already import is left as it is (a venv whose install failed halfway is
# completed on the next call). Each venv's pip log is $MLPJAX_PEERS/<peer>.log; the runner reports
# its last line when a peer is missing.
#   mlip        mlip==0.2.5 (InstaDeep, JAX; pulls its own jax)
#   mace-torch  torch==2.13.0 first (a CPU wheel where one is on the machine's pip find-links),
#               then mace-torch
# MLPJAX_PEERS_CUDA=1 asks for GPU builds instead (mlip[cuda12], torch from the package index
# without local CPU wheels) for `python -m benchmarks.run --gpu`; not yet tried on a GPU machine.
set -u
ROOT="${MLPJAX_PEERS:-$HOME/.cache/mlpjax-peers}"
PY="${PYTHON:-python3}"
mkdir -p "$ROOT"
peers=("$@")
[ ${#peers[@]} -eq 0 ] && peers=(mlip mace-torch)
status=0

make_venv() {  # $1 = venv dir
    if [ ! -x "$1/bin/python" ]; then
        "$PY" -m venv "$1" || return 1
        "$1/bin/python" -m pip install --quiet --upgrade pip || true
    fi
}

for peer in "${peers[@]}"; do
    venv="$ROOT/$peer"
    log="$ROOT/$peer.log"
    case "$peer" in
        mlip)
            check='import mlip, jax; from mlip.models import Mace, Nequip'
            if [ "${MLPJAX_PEERS_CUDA:-0}" = "1" ]; then
                install() { "$venv/bin/python" -m pip install "mlip[cuda12]==0.2.5"; }
            else
                install() { "$venv/bin/python" -m pip install "mlip==0.2.5"; }
            fi
            ;;
        mace-torch)
            check='import torch, mace; from mace import modules'
            if [ "${MLPJAX_PEERS_CUDA:-0}" = "1" ]; then
                install() {  # --isolated: no local find-links (their torch wheel is the CPU build)
                    "$venv/bin/python" -m pip install --isolated "torch==2.13.0" && "$venv/bin/python" -m pip install mace-torch
                }
            else
                install() {
                    "$venv/bin/python" -m pip install "torch==2.13.0" && "$venv/bin/python" -m pip install mace-torch
                }
            fi
            ;;
        *)
            echo "unknown peer '$peer' (known: mlip, mace-torch)" >&2
            status=1
            continue
            ;;
    esac
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$check" >/dev/null 2>&1; then
        echo "$peer: ready ($venv)"
        continue
    fi
    echo "$peer: installing into $venv (log: $log) ..."
    if make_venv "$venv" >"$log" 2>&1 && install >>"$log" 2>&1 && "$venv/bin/python" -c "$check" >>"$log" 2>&1; then
        echo "$peer: ready ($venv)"
    else
        echo "$peer: FAILED, last lines of $log:" >&2
        tail -n 5 "$log" >&2
        status=1
    fi
done
exit $status
