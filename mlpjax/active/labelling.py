"""Resumable, parallel labelling of structures by an oracle (:mod:`mlpjax.active.oracle`).

:func:`label` sends structures to worker processes, each of which builds the oracle's calculator
and returns energy [eV], forces [n_atoms, 3] eV/Å and, for cells periodic in 3D, stress [3, 3]
eV/Å^3. Every result is appended to an extended-XYZ file as it arrives (one ``write`` per frame,
then flush and fsync), so killing the run at any moment loses no finished label. Each frame carries
``info["label_id"]`` (the structure's stable id, :func:`structure_id`), ``info["oracle"]`` (the
oracle's description) and the input's scalar ``info`` entries (``config_type`` among them).

Resuming. :func:`label` first reads what is already there: the labelled frames of ``out_path`` and
the failures file ``<out_path>.failures.jsonl`` (one JSON object per line: ``id``, ``reason``,
``message``, ``oracle``, ``n_atoms``, ``formula``, ``seconds``). Structures whose id is in either are
skipped (no relabelling; ``retry_failures=True`` tries the failed ones again). A half-written last
frame or failure line (a kill in the middle of a write) is cut off with a warning and labelled
again; anything else that does not parse is a :class:`mlpjax.data.DataError` — earlier frames are
never dropped or rewritten silently. When every structure of a call is done, the frames of that
call are put in input order (an atomic rewrite), so the file does not depend on the number of
workers or on interruptions.

Failures. An oracle exception, a non-converged SCF, a non-finite result, a worker that runs past
``timeout_s`` (it is killed and replaced) or one that crashes is recorded with its reason
(:data:`mlpjax.active.oracle.REASONS`) and skipped; the loop goes on.

Processes. Each worker is a fresh interpreter (``python -c``, the "spawn" model: the parent may
have JAX initialised, and forking a process with JAX's threads is unsafe), talking to the parent
over two pipes. Unlike ``multiprocessing``'s spawn it does not re-import the caller's ``__main__``,
so scripts need no ``if __name__ == "__main__":`` guard and stdin/notebook callers work; it gets
the parent's ``sys.path``, so an ``ase:MODULE:CLASS`` oracle importable in the parent is importable
in the workers. POSIX only (pipes passed by file descriptor). Only one run may write an output at a
time (a lock on the file).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import json
import os
import re
import time
import warnings

import numpy as np

from mlpjax.active.oracle import OracleError, OracleSpec, evaluate, make_oracle
from mlpjax.config import ConfigError
from mlpjax.data.configuration import Configuration, DataError

ID_KEY = "label_id"  # info key of a labelled frame's structure id
ORACLE_KEY = "oracle"  # info key of the oracle's description
_RESERVED = {"energy", "forces", "stress", "virial", "free_energy", ID_KEY, ORACLE_KEY}
_ID_RE = re.compile(r'(?:^|\s)' + ID_KEY + r'=("(?:[^"\\]|\\.)*"|\S+)')
_MESSAGE_CHARS = 300


@dataclasses.dataclass(frozen=True)
class Failure:
    """A structure the oracle could not label."""

    id: str
    reason: str  # one of mlpjax.active.oracle.REASONS
    message: str  # one line


@dataclasses.dataclass(frozen=True)
class LabelReport:
    """What one :func:`label` call did."""

    out_path: str
    failures_path: str
    n_structures: int  # structures given (distinct ids)
    n_labelled: int  # labelled by this call
    n_failed: int  # failures recorded by this call
    n_skipped: int  # already labelled or recorded as failed before this call (not relabelled)
    failures: tuple  # Failure of every given structure that is not labelled (this call's and earlier ones)
    discarded_partial_frame: bool  # a half-written last frame of an interrupted run was cut off
    wall_s: float


def failures_path(out_path) -> str:
    """The failures file of an output: ``<out_path>.failures.jsonl``."""
    return os.fspath(out_path) + ".failures.jsonl"


def structure_id(atoms) -> str:
    """A stable id of a structure: ``s`` + 16 hex digits of SHA-256 over its atomic numbers, positions
    [Å], cell [Å] and pbc (exact bytes, float64/int64), so the same structure always gets the same id."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(np.asarray(atoms.numbers, dtype=np.int64)).tobytes())
    h.update(np.ascontiguousarray(np.asarray(atoms.positions, dtype=np.float64)).tobytes())
    h.update(np.ascontiguousarray(np.asarray(atoms.cell.array if hasattr(atoms.cell, "array") else atoms.cell,
                                             dtype=np.float64)).tobytes())
    h.update(np.asarray(atoms.pbc, dtype=bool).tobytes())
    return "s" + h.hexdigest()[:16]


def _as_atoms(s):
    import ase

    if isinstance(s, Configuration):
        a = ase.Atoms(numbers=s.numbers, positions=s.positions, cell=s.cell, pbc=s.pbc)
        a.info.update(s.info)
        return a
    if isinstance(s, ase.Atoms):
        a = ase.Atoms(numbers=s.numbers, positions=s.positions, cell=s.cell, pbc=s.pbc)
        a.info.update(s.info)
        return a
    raise TypeError(f"label() takes ase.Atoms or mlpjax.data.Configuration structures, got {type(s).__name__}")


def structure_ids(structures, *, id_key: str | None = None) -> list[str]:
    """The ids :func:`label` gives ``structures``: :func:`structure_id` (or ``info[id_key]``), with
    ``-1``, ``-2`` ... appended to repeats of an identical structure (by input order)."""
    return _ids([_as_atoms(s) for s in structures], id_key)


def labelled_ids(out_path) -> list[str]:
    """Ids of the complete labelled frames of an output, in file order ([] if it does not exist)."""
    out_path = os.fspath(out_path)
    if not os.path.exists(out_path):
        return []
    return [sid for sid, _ in _scan_frames(out_path)[0]]


def _ids(atoms_list, id_key) -> list[str]:
    out, seen = [], collections.Counter()
    for k, a in enumerate(atoms_list):
        if id_key is None:
            sid = structure_id(a)
        else:
            if id_key not in a.info:
                raise DataError(f"structure {k} has no info[{id_key!r}] (the id_key given to label)")
            sid = str(a.info[id_key])
            if not sid or re.search(r'[\s"=\\]', sid):
                raise DataError(f"structure {k}: id {sid!r} from info[{id_key!r}] must be non-empty, without spaces, "
                                "quotes, '=' or backslashes")
        n = seen[sid]
        seen[sid] += 1
        out.append(sid if n == 0 else f"{sid}-{n}")  # identical structures: stable suffix by input order
    return out


def _scalar_info(info: dict) -> dict:
    return {k: v for k, v in info.items() if k not in _RESERVED and isinstance(k, str)
            and isinstance(v, (str, bool, int, float, np.integer, np.floating, np.bool_))}


def _frame_bytes(atoms, result, sid: str, oracle: str) -> bytes:
    import ase
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    a = ase.Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    a.info.update(_scalar_info(atoms.info))
    a.info[ID_KEY], a.info[ORACLE_KEY] = sid, oracle
    energy, forces, stress = result
    res = {"energy": energy, "forces": forces}
    if stress is not None:
        s = np.asarray(stress)
        res["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])  # Voigt, ASE order
    a.calc = SinglePointCalculator(a, **res)
    buf = io.StringIO()
    ase.io.write(buf, a, format="extxyz")
    return buf.getvalue().encode()


def _append(fd: int, data: bytes) -> None:
    """Append ``data`` with one write per chunk, then fsync (durable before the next result is taken)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
    os.fsync(fd)


# ----------------------------------------------------------------------------- reading
def _scan_frames(path: str) -> tuple[list[tuple[str, bytes]], int, int]:
    """(id, frame bytes) of every complete frame of ``path``, the byte offset where they end, and the
    length of an incomplete trailing frame (0 if none). DataError for anything that is not a frame."""
    with open(path, "rb") as f:
        data = f.read()
    blocks, pos, k = [], 0, 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        header = data[pos:] if nl < 0 else data[pos:nl]
        if not header.strip().isdigit():
            if nl < 0 and (not header.strip() or header.strip().isdigit()):
                return blocks, pos, len(data) - pos
            raise DataError(f"frame {k} does not start with an atom count ({header[:40]!r}); it is not an extxyz file "
                            "written by mlpjax labelling: choose another output file", source=path)
        n_atoms = int(header.strip())
        end, complete = nl + 1 if nl >= 0 else len(data), nl >= 0
        for _ in range(n_atoms + 1):
            if not complete:
                break
            nxt = data.find(b"\n", end)
            if nxt < 0:
                complete = False
                break
            end = nxt + 1
        if not complete:
            return blocks, pos, len(data) - pos
        block = data[pos:end]
        comment = block.split(b"\n", 2)[1].decode(errors="replace")
        m = _ID_RE.search(comment)
        if m is None:
            raise DataError(f"frame {k} has no {ID_KEY}: the file was not written by mlpjax labelling; choose another "
                            "output file (labelling appends to it)", source=path)
        sid = m.group(1)
        if sid.startswith('"'):
            sid = sid[1:-1]
        lines = block.split(b"\n")[2:-1]
        widths = {len(line.split()) for line in lines}
        if len(widths) > 1:
            raise DataError(f"frame {k} (id {sid}) has atom lines of different lengths: the file is corrupted; repair it "
                            "or choose another output file", source=path)
        blocks.append((sid, block))
        pos, k = end, k + 1
    return blocks, pos, 0


def _scan_failures(path: str) -> tuple[list[dict], int, int]:
    """Failure records of a failures file, the offset where the complete lines end, and the length of
    a half-written last line (0 if none)."""
    if not os.path.exists(path):
        return [], 0, 0
    with open(path, "rb") as f:
        data = f.read()
    records, pos = [], 0
    for number, line in enumerate(data.split(b"\n")):
        end = pos + len(line) + 1
        if end > len(data):  # the last piece has no newline: complete only if it is empty
            return records, pos, len(data) - pos if line.strip() else 0
        if line.strip():
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict) or "id" not in rec:
                    raise ValueError("not a failure record")
            except ValueError:
                raise DataError(f"line {number + 1} is not a failure record (JSON with an id); repair or delete the file",
                                source=path) from None
            records.append(rec)
        pos = end
    return records, pos, 0


def read_failures(out_path) -> list[Failure]:
    """The recorded failures of an output (``<out_path>.failures.jsonl``), in file order."""
    records, _, _ = _scan_failures(failures_path(out_path))
    return [Failure(str(r["id"]), str(r.get("reason", "exception")), str(r.get("message", ""))) for r in records]


def _cut(path: str, offset: int, n_bytes: int, what: str) -> None:
    warnings.warn(f"{path}: discarded {what} ({n_bytes} bytes, an interrupted write); the complete records before it "
                  "are kept and the structure is labelled again", stacklevel=3)
    os.truncate(path, offset)


# ----------------------------------------------------------------------------- workers
def _worker_entry(read_fd: int, write_fd: int) -> None:
    """A worker process (``python -c``): take the parent's sys.path and the oracle, build the oracle once
    to check it, say ready, then label structures until told to stop or the parent goes away."""
    import signal
    import sys

    from multiprocessing.connection import Connection

    import ase

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops (and kills) us
    inbox, outbox = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    try:
        sys_path, spec = inbox.recv()
    except (EOFError, OSError):
        return
    sys.path[:] = sys_path  # so that an ase:MODULE:CLASS oracle importable in the parent is importable here
    try:
        spec.calculator()
    except Exception as err:  # the oracle cannot be built here: the parent stops with this message
        outbox.send(("fatal", f"{type(err).__name__}: {err}"))
        return
    outbox.send(("ready", None))
    while True:
        try:
            msg = inbox.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if msg is None:
            return
        index, geometry = msg
        atoms = ase.Atoms(numbers=geometry["numbers"], positions=geometry["positions"], cell=geometry["cell"],
                          pbc=geometry["pbc"])
        atoms.info.update(geometry["info"])
        try:
            r = evaluate(spec, atoms)
            reply = (index, "ok", (r.energy, r.forces, r.stress))
        except OracleError as err:
            reply = (index, err.reason, str(err))
        except Exception as err:  # any oracle exception is a recorded failure of this structure
            reply = (index, "exception", f"{type(err).__name__}: {err}")
        try:
            outbox.send(reply)
        except (OSError, BrokenPipeError):
            return


@dataclasses.dataclass
class _Worker:
    proc: object  # subprocess.Popen
    inbox: object  # Connection the worker reads its tasks from
    outbox: object  # Connection its results arrive on (EOF when it dies)
    ready: bool = False
    task: int | None = None
    started: float = 0.0


class _Pool:
    """Worker processes, each a fresh interpreter (``python -c``; the spawn model, without re-importing
    the parent's ``__main__``), talking over two pipes. A hung worker is killed and replaced."""

    def __init__(self, spec: OracleSpec, n: int):
        self.spec = spec
        self.workers: list[_Worker] = []
        for _ in range(n):
            self.workers.append(self._start())

    def _start(self) -> _Worker:
        import subprocess
        import sys

        from multiprocessing.connection import Connection

        r1, w1 = os.pipe()  # parent -> worker
        r2, w2 = os.pipe()  # worker -> parent
        code = f"from mlpjax.active.labelling import _worker_entry; _worker_entry({r1}, {w2})"
        try:
            proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=(r1, w2), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL)
        finally:
            os.close(r1)
            os.close(w2)
        w = _Worker(proc, Connection(w1, readable=False), Connection(r2, writable=False))
        w.inbox.send((list(sys.path), self.spec))
        return w

    def _stop(self, w: _Worker, *, kill: bool) -> None:
        if not kill:
            try:
                w.inbox.send(None)
                w.proc.wait(timeout=10)
            except (OSError, BrokenPipeError, Exception):
                kill = True
        if kill and w.proc.poll() is None:
            w.proc.kill()
        w.proc.wait()
        w.inbox.close()
        w.outbox.close()

    def retire(self, w: _Worker, *, replace: bool) -> None:
        """Kill ``w`` (hung or dead) and, if ``replace``, start a fresh worker in its place."""
        self._stop(w, kill=True)
        if replace:
            self.workers[self.workers.index(w)] = self._start()
        else:
            self.workers.remove(w)

    def close(self, *, kill: bool = False) -> None:
        for w in self.workers:
            self._stop(w, kill=kill or w.task is not None or not w.ready)
        self.workers = []


def _geometry(atoms) -> dict:
    return {"numbers": np.asarray(atoms.numbers), "positions": np.asarray(atoms.positions),
            "cell": np.asarray(atoms.cell.array), "pbc": np.asarray(atoms.pbc), "info": _scalar_info(atoms.info)}


def _run(pool: _Pool, atoms_list, todo, *, timeout_s, on_result, on_failure, bar) -> None:
    """Feed ``todo`` (indices) to the pool; call on_result(i, result) / on_failure(i, reason, message,
    seconds) as results come."""
    from multiprocessing.connection import wait

    pending = collections.deque(todo)

    def finish(w, reason=None, message=None, result=None):
        i, w.task = w.task, None
        if result is not None:
            on_result(i, result)
        else:
            on_failure(i, reason, message, time.monotonic() - w.started)
        if bar is not None:
            bar.update(1)

    while pending or any(w.task is not None for w in pool.workers):
        if not pool.workers:  # every worker died idle: start one
            pool.workers.append(pool._start())
        for w in pool.workers:
            if w.ready and w.task is None and pending:
                i = pending.popleft()
                try:
                    w.inbox.send((i, _geometry(atoms_list[i])))
                except (OSError, BrokenPipeError):  # it died while idle: its EOF below replaces it
                    pending.appendleft(i)
                    continue
                w.task, w.started = i, time.monotonic()
        busy = [w for w in pool.workers if w.task is not None]
        wait_s = None
        if timeout_s is not None and busy:
            wait_s = max(0.0, min(w.started + timeout_s for w in busy) - time.monotonic())
        ready = set(wait([w.outbox for w in pool.workers], wait_s))
        for w in list(pool.workers):
            if w.outbox not in ready:
                continue
            try:
                msg = w.outbox.recv()
            except (EOFError, OSError):  # the worker died
                w.proc.wait()
                if not w.ready:
                    raise RuntimeError(f"a labelling worker exited while starting (exit code {w.proc.returncode}); "
                                       "see its error above") from None
                if w.task is not None:
                    finish(w, "crashed", f"the worker process died (exit code {w.proc.returncode}) while labelling")
                pool.retire(w, replace=bool(pending))
                continue
            if msg[0] == "fatal":
                raise ConfigError(f"oracle {pool.spec.describe()} cannot be built in a labelling worker: {msg[1]}",
                                  option="oracle")
            if msg[0] == "ready":
                w.ready = True
                continue
            _, status, payload = msg
            if status == "ok":
                finish(w, result=payload)
            else:
                finish(w, status, payload)
        if timeout_s is not None:
            now = time.monotonic()
            for w in list(pool.workers):
                if w.task is not None and now - w.started >= timeout_s:
                    finish(w, "timeout", f"no result after {timeout_s:g} s; the worker was killed")
                    pool.retire(w, replace=bool(pending))


# ----------------------------------------------------------------------------- label
def label(structures, oracle="emt", out_path=None, *, workers: int = 1, timeout_s: float | None = None,
          progress: bool = False, id_key: str | None = None, retry_failures: bool = False) -> LabelReport:
    """Label ``structures`` (``ase.Atoms`` or :class:`mlpjax.data.Configuration`) with ``oracle`` into
    the extxyz file ``out_path``, resuming what is already there (see the module docstring).

    Args:
      structures: the structures; their scalar ``info`` (``config_type`` ...) is copied to the frames.
      oracle: anything :func:`mlpjax.active.oracle.make_oracle` takes (default ``"emt"``).
      out_path: the extxyz output, appended to; ``<out_path>.failures.jsonl`` holds the failures.
      workers: worker processes labelling at once (each builds its own calculator).
      timeout_s: seconds one structure may take; a worker past it is killed and the structure
        recorded as failed (``"timeout"``). None: no limit.
      progress: a tqdm progress bar.
      id_key: take each structure's id from ``info[id_key]`` instead of :func:`structure_id`.
      retry_failures: label structures recorded as failed again.

    Returns a :class:`LabelReport`. Labels are read back with ``mlpjax.data.read(out_path)``.
    """
    if out_path is None:
        raise TypeError("label() needs out_path, the extxyz file the labels are appended to")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be an integer >= 1, got {workers!r}", option="workers")
    if timeout_s is not None and not timeout_s > 0:
        raise ConfigError(f"timeout_s must be > 0 seconds or None, got {timeout_s!r}", option="timeout_s")
    t0 = time.monotonic()
    spec = make_oracle(oracle)
    name = spec.describe()
    out_path = os.fspath(out_path)
    fail_path = failures_path(out_path)
    atoms_list = [_as_atoms(s) for s in structures]
    ids = _ids(atoms_list, id_key)
    fd = os.open(out_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    ffd = None
    pool = None
    try:
        _lock(fd, out_path)
        blocks, end, tail = _scan_frames(out_path)
        discarded = bool(tail)
        if tail:
            _cut(out_path, end, tail, "a half-written last frame")
        records, fend, ftail = _scan_failures(fail_path)
        if ftail:
            _cut(fail_path, fend, ftail, "a half-written last failure record")
        done = {sid for sid, _ in blocks}
        failed = {str(r["id"]): r for r in records}
        skip = done if retry_failures else done | set(failed)
        todo = [i for i, sid in enumerate(ids) if sid not in skip]
        new_failures: list[Failure] = []
        n_labelled = 0
        if todo:
            def on_result(i, result):
                nonlocal n_labelled
                _append(fd, _frame_bytes(atoms_list[i], result, ids[i], name))
                done.add(ids[i])
                n_labelled += 1

            def on_failure(i, reason, message, seconds):
                message = " ".join(str(message).split())[:_MESSAGE_CHARS]
                a = atoms_list[i]
                rec = {"id": ids[i], "reason": reason, "message": message, "oracle": name, "n_atoms": len(a),
                       "formula": a.get_chemical_formula(), "seconds": round(seconds, 3)}
                nonlocal ffd
                if ffd is None:  # created with the first failure
                    ffd = os.open(fail_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                _append(ffd, (json.dumps(rec) + "\n").encode())
                failed[ids[i]] = rec
                new_failures.append(Failure(ids[i], reason, message))

            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=len(todo), desc=f"labelling ({name})", unit="structure")
            try:
                pool = _Pool(spec, min(workers, len(todo)))
                _run(pool, atoms_list, todo, timeout_s=timeout_s, on_result=on_result, on_failure=on_failure, bar=bar)
                pool.close()
                pool = None
            finally:
                if bar is not None:
                    bar.close()
        _put_in_order(out_path, ids)
        mine = set(ids)
        failures = tuple(Failure(sid, str(r.get("reason", "exception")), str(r.get("message", "")))
                         for sid, r in failed.items() if sid in mine and sid not in done)
        return LabelReport(out_path=out_path, failures_path=fail_path, n_structures=len(ids), n_labelled=n_labelled,
                           n_failed=len(new_failures), n_skipped=len(ids) - len(todo), failures=failures,
                           discarded_partial_frame=discarded, wall_s=time.monotonic() - t0)
    finally:
        if pool is not None:
            pool.close(kill=True)
        os.close(fd)
        if ffd is not None:
            os.close(ffd)


def _lock(fd: int, path: str) -> None:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ConfigError(f"{path} is being written by another labelling run; wait for it to finish or choose "
                          "another output file", option="out_path") from None


def _put_in_order(out_path: str, ids: list[str]) -> None:
    """Rewrite the output (atomically) so this call's frames follow the input order, after any other frames."""
    from mlpjax.files import atomic_write_bytes

    blocks, _, _ = _scan_frames(out_path)
    rank = {sid: k for k, sid in enumerate(ids)}
    others = [b for b in blocks if b[0] not in rank]
    mine = sorted((b for b in blocks if b[0] in rank), key=lambda b: rank[b[0]])
    ordered = others + mine
    if [b[0] for b in ordered] != [b[0] for b in blocks]:
        mode = os.stat(out_path).st_mode & 0o777
        atomic_write_bytes(out_path, b"".join(block for _, block in ordered))
        os.chmod(out_path, mode)  # the temporary file of the atomic write is created 0600
