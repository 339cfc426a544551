"""An i-PI socket driver: an mlpjax potential answers positions with energy, forces and virial.

    from mlpjax import load
    from mlpjax.ipi import serve
    template = ase.io.read("init.xyz")                      # species and atom order (and pbc)
    serve(load("model.mlpjax"), template, unix="mlpjax")  # until the server says EXIT

i-PI (and every program that speaks its protocol as a *server*: ASE's ``SocketIOCalculator``,
i-PI's ``<ffsocket>``) integrates the dynamics and sends, every force call, the cell and the
positions; the driver (a *client*) sends back the energy, forces and virial. This module is a thin
layer over ASE's :class:`ase.calculators.socketio.SocketClient`, which does the protocol, with
``potential.calculator()`` (:class:`mlpjax.calculator.MLPJaxCalculator`) on the template
:class:`ase.Atoms`: the numbers are those of the one energy contract
(:func:`mlpjax.potential.compute_properties`), the same as the ASE calculator, training and jax-md.
There is no second force path here.

What the driver needs to know. The protocol carries only the cell and the positions (and the atom
count), so the **template** structure gives the species, in the server's atom order, and whether
the system is periodic. ``periodic=None`` ("auto") takes the template's pbc when it has a cell; a
template without a cell (a plain xyz, including i-PI's own ``init.xyz``, whose ``# CELL(abcABC)``
comment ASE does not read) is treated as fully periodic in the box the server sends, as i-PI
itself assumes. ``periodic=False`` treats it as a molecule (no images, virial 0).

Units. The protocol speaks atomic units (Bohr, Hartree, Hartree/Bohr). ``SocketClient`` converts
at the boundary with ASE's constants (positions and cell ÷ ``units.Bohr`` on the way in are
multiplied back to Å; energy, forces and virial are divided by ``units.Ha`` and multiplied by
``units.Bohr`` as needed on the way out), so everything in this module is eV, Å, eV/Å, eV/Å³ and
nothing converts twice. It also transposes the cell and virial (i-PI stores lattice vectors as
columns, ASE as rows).

Virial and stress. ``SocketClient`` sends the virial W = −V σ [3, 3] eV (×1/Ha), where σ is ASE's
stress of :mod:`mlpjax.potential` (σ = (1/V) ∂E/∂ε, positive = tensile), i.e. W = −∂E/∂ε, the
potential part of i-PI's virial; i-PI's pressure is (kinetic + W)/V and ASE's
``SocketIOCalculator`` turns it back into σ = −W/V. A system that is not fully periodic gets W = 0.

Checks the protocol lacks: a server that sends another atom count than the template, or a zero
volume cell for a periodic system, stops the driver with :class:`DriverError` (before any number is
computed). A server that is not listening yet is retried for ``wait_s`` seconds (``i-pi input.xml &``
opens its socket after a moment). The driver stops when the server sends EXIT or closes the
connection, or after ``max_steps`` answered force calls.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import socket
import time

import numpy as np

from mlpjax.units import GPA_PER_EV_A3


class DriverError(RuntimeError):
    """The driver cannot serve: no server to connect to, or the server's system does not match the template.

    ``option`` names what to fix: "address" (the server's address or Unix socket), "structure" (the
    template) or "periodic"."""

    def __init__(self, message: str, *, option: str):
        super().__init__(message)
        self.option = option


@dataclasses.dataclass(frozen=True)
class ServeResult:
    steps: int  # force calls answered
    seconds: float  # wall time from connecting to closing (includes the server's time between calls)
    first_call_seconds: float  # wall time from connecting to the first answer (compilation included); nan if none
    reason: str  # "exit" (the server sent EXIT or closed the connection) or "max_steps"


def parse_address(text: str) -> tuple[str, int]:
    """``"HOST:PORT"`` → (host, port); raises ValueError with what is wrong (port in 1..65535)."""
    host, sep, port = str(text).strip().rpartition(":")
    if not sep or not host or not port:
        raise ValueError(f"expected HOST:PORT such as localhost:31415, got {text!r}")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"port must be an integer in [1, 65535], got {port!r} (in {text!r})") from None
    if not 1 <= number <= 65535:
        raise ValueError(f"port must be an integer in [1, 65535], got {number} (in {text!r})")
    return host, number


def unix_socket_path(name: str) -> str:
    """The file of Unix socket ``name``: ``/tmp/ipi_NAME``, as i-PI, LAMMPS and ASE all name it."""
    from ase.calculators.socketio import actualunixsocketname

    return actualunixsocketname(name)


def describe_server(address=None, unix=None) -> str:
    """``"unix socket /tmp/ipi_NAME"`` or ``"HOST:PORT"`` (for messages)."""
    if unix is not None:
        return f"unix socket {unix_socket_path(unix)}"
    host, port = parse_address(address) if isinstance(address, str) else address
    return f"{host}:{port}"


def is_periodic(template, periodic: bool | None = None) -> bool:
    """Whether the driver treats the system as fully periodic (see the module docstring: "auto")."""
    if periodic is not None:
        return bool(periodic)
    if not np.any(template.cell.array):  # no cell in the file: the server's box, periodic
        return True
    return bool(np.all(template.pbc))


def _connect(address, unix, wait_s: float, protocol_log):
    from ase.calculators.socketio import SocketClient

    if (address is None) == (unix is None):
        raise ValueError("give exactly one of address=(HOST, PORT) / 'HOST:PORT' and unix=NAME")
    host, port = (None, None) if unix is not None else (parse_address(address) if isinstance(address, str) else address)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if unix is not None:
                return SocketClient(unixsocket=unix, log=protocol_log)
            return SocketClient(host=host, port=int(port), log=protocol_log)
        except (ConnectionRefusedError, FileNotFoundError, socket.timeout) as err:
            if time.monotonic() >= deadline:
                raise DriverError(f"no i-PI server at {describe_server(address, unix)} after {wait_s:g} s "
                                  f"({err.strerror or err}): start the server (i-pi input.xml, or ASE's "
                                  "SocketIOCalculator) first, or check the address", option="address") from None
            time.sleep(0.2)
        except socket.gaierror as err:
            raise DriverError(f"cannot resolve host {host!r} ({err.strerror or err})", option="address") from None


class _Stop(Exception):
    """Raised after the max_steps-th answer has been sent, to leave SocketClient's loop."""


def serve(potential, template, *, address=None, unix: str | None = None, periodic: bool | None = None,
          max_steps: int | None = None, wait_s: float = 60.0, log: str | os.PathLike | None = None,
          protocol_log: io.TextIOBase | None = None, calculator=None) -> ServeResult:
    """Connect to an i-PI-protocol server and answer its force calls with ``potential``.

    Args:
      potential: an :class:`mlpjax.Potential` (or an ensemble: the mean is served).
      template: :class:`ase.Atoms` with the server's atoms in its order (species; positions and cell
        are overwritten every call). Every element must be one the potential knows.
      address: ``"HOST:PORT"`` or (host, port) of an INET server; or
      unix: name of a Unix socket ``/tmp/ipi_NAME`` (exactly one of the two).
      periodic: None = auto (the template's pbc; no cell in the template: periodic), True, False.
      max_steps: stop after answering this many force calls (None: until the server's EXIT).
      wait_s: seconds to keep retrying while the server is not listening yet.
      log: CSV file of every answered call: step, wall seconds, energy (eV), largest |F| (eV/Å),
        volume (Å³) and pressure (GPa, potential part −tr σ/3); the last two empty if not periodic.
      protocol_log: a text file for ASE's message-level protocol log (debugging).
      calculator: the ASE calculator to use (default ``potential.calculator()``).

    Returns: :class:`ServeResult`. Raises :class:`DriverError` (see there).
    """
    from ase.data import chemical_symbols

    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1 or None, got {max_steps}")
    atoms = template.copy()
    known = {int(z) for z in potential.species}
    unknown = sorted(set(atoms.numbers.tolist()) - known)
    if unknown:
        raise DriverError(f"the template contains {', '.join(chemical_symbols[z] for z in unknown)}, but the model "
                          f"knows only {', '.join(chemical_symbols[z] for z in sorted(known))}", option="structure")
    if periodic is not None or not np.any(atoms.cell.array):  # else: the template's pbc
        atoms.pbc = is_periodic(atoms, periodic)
    use_stress = bool(np.all(atoms.pbc))  # the calculator gives stress for fully periodic cells only
    atoms.calc = calculator if calculator is not None else potential.calculator()
    n_atoms = len(atoms)

    with contextlib.ExitStack() as stack:
        out = None
        if log is not None:
            out = stack.enter_context(open(log, "w", buffering=1))
            out.write("step,seconds,energy_eV,max_force_eV_per_A,volume_A3,pressure_GPa\n")
        client = _connect(address, unix, wait_s, protocol_log)
        t0 = time.perf_counter()
        steps, first = 0, float("nan")
        # SocketClient's loop (irun_rank0) has no hook between receiving positions and computing, or after
        # sending an answer: the two checks and the step count wrap its protocol's methods instead.
        protocol = client.protocol
        recvposdata, sendforce = protocol.recvposdata, protocol.sendforce

        def checked_recvposdata():
            cell, icell, positions = recvposdata()  # Å (SocketClient converted from Bohr)
            if len(positions) != n_atoms:
                raise DriverError(f"the server sent {len(positions)} atoms but the template has {n_atoms}: give a "
                                  "template structure with the server's atoms in its order", option="structure")
            if use_stress and abs(np.linalg.det(cell)) < 1e-12:
                raise DriverError("the server sent a cell of zero volume but the system is treated as periodic: give "
                                  "the server a box, or serve it as a molecule (periodic=False, --periodic no)",
                                  option="periodic")
            return cell, icell, positions

        def counted_sendforce(energy, forces, virial, *args, **kwargs):
            nonlocal steps, first
            sendforce(energy, forces, virial, *args, **kwargs)  # eV, eV/Å, eV (SocketClient converts to a.u.)
            steps += 1
            if steps == 1:
                first = time.perf_counter() - t0
            if out is not None:
                fmax = float(np.sqrt((forces ** 2).sum(1)).max()) if len(forces) else 0.0
                volume, pressure = "", ""
                if use_stress:  # W = -V σ, so the potential part of the pressure -tr σ / 3 = tr W / 3V
                    v = atoms.get_volume()
                    volume, pressure = f"{v:.6f}", f"{np.trace(virial) / (3 * v) * GPA_PER_EV_A3:.6f}"
                out.write(f"{steps},{time.perf_counter() - t0:.4f},{energy:.10f},{fmax:.6g},{volume},{pressure}\n")
            if max_steps is not None and steps >= max_steps:
                raise _Stop

        protocol.recvposdata, protocol.sendforce = checked_recvposdata, counted_sendforce
        try:
            client.run(atoms, use_stress=use_stress)  # closes the socket when it returns or raises
            reason = "exit"
        except _Stop:
            reason = "max_steps"
        return ServeResult(steps=steps, seconds=time.perf_counter() - t0, first_call_seconds=first, reason=reason)
