"""Vibrational spectra from a velocity autocorrelation function: windowed cosine transform
(THz and cm⁻¹) and its main peak."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["THZ_TO_CM1", "Spectrum", "vibrational_spectrum", "spectrum_peak"]

THZ_TO_CM1 = 1e12 / 2.99792458e10  # 1 THz = 33.356 cm⁻¹ (ν̃ = ν / c)


class Spectrum(NamedTuple):
    frequency_THz: np.ndarray  # [n_freq] THz (ν ≥ 0)
    wavenumber_cm1: np.ndarray  # [n_freq] cm⁻¹ (ν̃ = ν / c)
    intensity: np.ndarray  # [n_freq] [C]·ps, windowed cosine transform of the VACF


def vibrational_spectrum(c: np.ndarray, dt_fs: float, *, window: str | None = "hann", pad_factor: int = 4) -> Spectrum:
    """Vibrational spectrum (power spectrum of the velocities) from a VACF.

    I(ν) = 2 ∫₀^{t_max} w(t) C(t) cos(2πνt) dt, evaluated as dt·[C₀w₀ + 2 Σ_k w_k C_k cos(2πν k dt)]
    by a real FFT of the even extension of w·C, zero-padded to ≥ ``pad_factor`` times its
    length for a finer frequency grid (padding interpolates, it adds no resolution:
    that is ≈ 1/t_max).

    c: [n_lags] VACF (:func:`vacf`, normalised or not) at lags k·dt.
    dt_fs: time between lags, fs.
    window: ``"hann"`` — the half Hann window w(t) = ½(1 + cos(π t / t_max)), 1 at t = 0
        and 0 at t_max, which suppresses the ringing of the truncated VACF; None — no window.
    Returns :class:`Spectrum`; with an unnormalised VACF in Å²/ps² and no window,
    I(0) = 2·dim·D (D as in :func:`green_kubo_diffusion`).
    """
    c = np.asarray(c, dtype=np.float64)
    n = len(c)
    if n < 2:
        raise ValueError("the VACF needs at least 2 lags for a spectrum")
    if window == "hann":
        w = 0.5 * (1.0 + np.cos(np.pi * np.arange(n) / (n - 1)))
    elif window is None:
        w = np.ones(n)
    else:
        raise ValueError(f"window must be 'hann' or None, got {window!r}")
    cw = c * w
    n_fft = 1 << int(np.ceil(np.log2(max(2, pad_factor) * 2 * (n - 1))))
    x = np.zeros(n_fft)
    x[:n] = cw
    x[n_fft - (n - 1) :] = cw[1:][::-1]  # even extension: x[−k] = x[k]
    dt_ps = dt_fs * 1e-3
    intensity = np.fft.rfft(x).real * dt_ps
    freq = np.fft.rfftfreq(n_fft, d=dt_ps)  # THz = 1/ps
    return Spectrum(frequency_THz=freq, wavenumber_cm1=freq * THZ_TO_CM1, intensity=intensity)


def spectrum_peak(spectrum: Spectrum) -> float | None:
    """Frequency (THz) of the highest local maximum of the spectrum at ν > 0, or None if there is none.

    The ν = 0 value (diffusive motion) is not a peak.
    """
    from scipy.signal import find_peaks

    peaks, _ = find_peaks(spectrum.intensity)
    peaks = peaks[spectrum.frequency_THz[peaks] > 0]
    if len(peaks) == 0:
        return None
    return float(spectrum.frequency_THz[peaks[np.argmax(spectrum.intensity[peaks])]])
