"""Figures for docs/ecg.md: synthetic recordings of each class, their spectrograms, the
augmentations, synthetic beats next to real beats (resampled to 300 Hz), and the realistic
generator's beats next to the real beats of its template bank.

    python -m experiments.ecg_figures --out docs/figures
    python -m experiments.ecg_figures --out docs/figures --only realistic   # the realistic set's figures

The real recordings are read from ../shared/data/ecg when present (MIT-BIH arrhythmia
record 208 at 360 Hz, raw 11-bit ADC, 200 ADC/mV around 1024; a healthy 1 kHz recording);
without them the beat figure shows the synthetic beats only (with a warning).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from jaxcomp.ecg.data import CLASS_NAMES, CLASSES, FS

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "ecg")


def beats_at_r(x: np.ndarray, fs: int, before: float = 0.35, after: float = 0.55, max_beats: int = 200) -> np.ndarray:
    """Beats ``[n, samples]`` cut around R peaks (band-passed peak picking, 0.3 s refractory)."""
    import scipy.signal

    b, a = scipy.signal.butter(2, [5, 30], btype="band", fs=fs)
    y = scipy.signal.filtfilt(b, a, x)
    sign = 1 if np.percentile(y, 99.5) >= -np.percentile(y, 0.5) else -1
    peaks, _ = scipy.signal.find_peaks(sign * y, distance=int(0.3 * fs), height=np.percentile(sign * y, 98) * 0.4)
    lo, hi = int(before * fs), int(after * fs)
    peaks = peaks[(peaks > lo) & (peaks < len(x) - hi)][:max_beats]
    base = scipy.signal.medfilt(x, 2 * int(0.3 * fs) + 1)  # remove baseline wander before averaging
    return np.stack([x[p - lo:p + hi] - base[p] for p in peaks])


def realistic_figures(out: str) -> None:
    """``ecg_realistic_beats.png``: beats of the realistic generator next to the real beats of the shipped
    template bank they come from (normal beats of both sources, PVCs), and ``ecg_realistic_classes.png``:
    one realistic recording per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxcomp.ecg.realistic import POST, PRE, load_template_bank, synthesize_realistic_record

    bank = load_template_bank()
    t = (np.arange(PRE + POST) - PRE) / FS

    def cut(x, r_times):
        idx = np.round(np.asarray(r_times) * FS).astype(int)
        idx = idx[(idx >= PRE) & (idx + POST <= len(x))]
        return np.stack([x[i - PRE:i + POST] for i in idx]) if len(idx) else np.zeros((0, PRE + POST))

    synth = {"healthy": [], "mit": [], "pvc": []}
    for i in range(60):  # normal records of each source, and O records with PVCs
        label = 0 if i < 24 else 2
        x, info = synthesize_realistic_record(np.random.default_rng([21, i]), label, 30 * FS, bank)
        r, e = info["r_times"], info["ectopic"]
        if label == 0:
            synth[info["source"]].append(cut(x, r))
        elif info.get("ectopic_kind") == "pvc":
            synth["pvc"].append(cut(x, r[e]))
    panels = [("healthy recording: normal beats", bank["normal_healthy_unit"], "healthy"),
              ("MIT-BIH 208: normal beats", bank["normal_mit_unit"], "mit"),
              ("MIT-BIH 208: PVCs (wide QRS, no P)", bank["pvc_mit_unit"], "pvc")]
    fig, axes = plt.subplots(2, 3, figsize=(12.5, 5.6), sharex=True)
    for j, (title, real, key) in enumerate(panels):
        beats = np.concatenate(synth[key]) if synth[key] else np.zeros((0, PRE + POST))
        for row, (name, b, colour) in enumerate([("real (template bank)", real, "C0"),
                                                  ("realistic synthetic", beats, "C3")]):
            ax = axes[row, j]
            if len(b) == 0:
                continue
            # each beat to unit peak |QRS| and the polarity of the bank's median, for display
            peak = np.abs(b[:, PRE - 15:PRE + 30]).max(1, keepdims=True) + 1e-9
            b = b / peak
            ref = np.median(real / (np.abs(real[:, PRE - 15:PRE + 30]).max(1, keepdims=True) + 1e-9), 0)
            b = b * np.sign(b @ ref)[:, None]
            for beat in b[:80]:
                ax.plot(t, beat, color="0.75", lw=0.4)
            ax.plot(t, np.median(b, 0), color=colour, lw=1.8, label=f"median of {len(b)}")
            ax.set_title(f"{title}\n{name}", fontsize=8.5)
            ax.legend(fontsize=7, loc="lower right")
            ax.set_ylim(-1.6, 1.4)
    for ax in axes[1]:
        ax.set_xlabel("s from R peak")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "ecg_realistic_beats.png"), dpi=80)
    plt.close(fig)

    fig, axes = plt.subplots(4, 1, figsize=(12, 7.5), sharex=True)
    for c, name in enumerate(CLASSES):
        x, info = synthesize_realistic_record(np.random.default_rng([23, c]), c, 30 * FS, bank)
        axes[c].plot(np.arange(10 * FS) / FS, x[: 10 * FS], lw=0.6, color="k")
        extra = ", ".join(list(info.get("subtypes", [])) + list(info.get("artefacts", [])))
        axes[c].set_title(f"realistic {name} ({CLASS_NAMES[c]}; beats from {info['source']}"
                          f"{', ' + extra if extra else ''}, {info['heart_rate']:.0f} bpm)", fontsize=9, loc="left")
        axes[c].set_ylabel("mV")
    axes[-1].set_xlabel("s")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "ecg_realistic_classes.png"), dpi=80)
    plt.close(fig)


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scipy.signal

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/figures")
    parser.add_argument("--data", default=SHARED, help="directory of the real recordings")
    parser.add_argument("--only", choices=("all", "simple", "realistic"), default="all",
                        help="the figures of the simple generator, of the realistic one, or both")
    args = parser.parse_args()
    from jaxcomp.files import check_output_folder

    try:
        check_output_folder(args.out)
    except ValueError as e:
        parser.error(str(e))
    if args.data != SHARED and not os.path.isdir(args.data):  # the default may be absent (no shared data)
        parser.error(f"--data {args.data} is not a folder of recordings")
    os.makedirs(args.out, exist_ok=True)
    if args.only in ("all", "realistic"):
        realistic_figures(args.out)
    if args.only == "realistic":
        print("wrote", ", ".join(sorted(f for f in os.listdir(args.out) if f.startswith("ecg_realistic"))))
        return 0

    import jax

    from jaxcomp.ecg.frontend import dropout_bursts, log_spectrogram, random_resample
    from jaxcomp.ecg.synthetic import synthesize_record

    # 1. one synthetic recording per class, first 10 s, with its log spectrogram
    fig, axes = plt.subplots(4, 2, figsize=(13, 8), gridspec_kw={"width_ratios": [3, 1.2]})
    for c, name in enumerate(CLASSES):
        rng = np.random.default_rng([7, c])
        x, info = synthesize_record(rng, c, 30 * FS)
        t = np.arange(10 * FS) / FS
        axes[c, 0].plot(t, x[: 10 * FS], lw=0.6, color="k")
        extra = ", ".join(info.get("subtypes", [])) or info.get("rhythm", "")
        axes[c, 0].set_title(f"synthetic {name} ({CLASS_NAMES[c]}; {extra}, {info['heart_rate']:.0f} bpm)",
                             fontsize=9, loc="left")
        axes[c, 0].set_ylabel("mV")
        feats, frames = log_spectrogram(jax.numpy.asarray(x[None]), jax.numpy.asarray([len(x)]), normalize=False)
        axes[c, 1].imshow(np.asarray(feats[0]).T, aspect="auto", origin="lower", cmap="magma",
                          extent=[0, len(x) / FS, 0, FS / 2])
        axes[c, 1].set_ylabel("Hz")
    axes[-1, 0].set_xlabel("s")
    axes[-1, 1].set_xlabel("s")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "ecg_synthetic_classes.png"), dpi=90)
    plt.close(fig)

    # 2. augmentations of one recording
    x, _ = synthesize_record(np.random.default_rng([7, 0]), 0, 10 * FS)
    xs = jax.numpy.asarray(np.stack([x, x]))
    n = jax.numpy.asarray([len(x), len(x)])
    slow, n_slow = random_resample(jax.random.PRNGKey(3), xs, n, 1.3, 1.3)
    fast, n_fast = random_resample(jax.random.PRNGKey(3), xs, n, 0.75, 0.75)
    burst = dropout_bursts(jax.random.PRNGKey(4), xs, n)
    fig, axes = plt.subplots(4, 1, figsize=(12, 7), sharex=True)
    for ax, (title, y) in zip(axes, [("original (synthetic N)", x), ("resampled x1.3 (slower heart rate)", slow[0]),
                                     ("resampled x0.75 (faster)", fast[0]), ("dropout bursts", burst[0])]):
        ax.plot(np.arange(len(x)) / FS, np.asarray(y), lw=0.6, color="k")
        ax.set_title(title, fontsize=9, loc="left")
    axes[-1].set_xlabel("s")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "ecg_augmentations.png"), dpi=90)
    plt.close(fig)

    # 3. synthetic beats next to real ones, all at 300 Hz, scaled to unit R amplitude
    real = []
    mit = os.path.join(args.data, "mitbih_208_360hz_raw.npy")
    healthy = os.path.join(args.data, "systole_task1_1000hz.npy")
    if os.path.exists(mit):
        raw = (np.load(mit).astype(np.float64) - 1024) / 200.0  # MIT-BIH: 200 ADC units/mV, zero 1024
        real.append(("MIT-BIH 208 (360 -> 300 Hz)", scipy.signal.resample_poly(raw, 5, 6)))
    if os.path.exists(healthy):
        h = np.load(healthy).astype(np.float64)[: 120 * 1000]
        real.append(("healthy 1 kHz recording (-> 300 Hz)", scipy.signal.resample_poly(h, 3, 10)))
    if not real:
        print(f"warning: no MIT-BIH 208 or healthy recording in {args.data}: the figure shows synthetic beats only",
              file=sys.stderr)
    synth = np.concatenate([synthesize_record(np.random.default_rng([11, i]), 0, 30 * FS)[0] for i in range(6)])
    panels = [("synthetic N (6 records)", synth)] + real
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), sharey=True)
    axes = np.atleast_1d(axes)
    t = (np.arange(int(0.35 * FS) + int(0.55 * FS)) - int(0.35 * FS)) / FS
    for ax, (title, sig) in zip(axes, panels):
        beats = beats_at_r(sig, FS)
        r = np.median(beats[:, int(0.35 * FS)])
        beats = beats / (r if abs(r) > 1e-6 else 1.0)
        for b in beats[:60]:
            ax.plot(t, b, color="0.7", lw=0.5)
        ax.plot(t, np.median(beats, 0), color="C3", lw=1.8, label="median beat")
        ax.set_title(f"{title}\n{len(beats)} beats", fontsize=9)
        ax.set_xlabel("s from R peak")
    axes[0].set_ylabel("amplitude / median R")
    axes[0].legend(fontsize=8)
    axes[0].set_ylim(-1.5, 1.6)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "ecg_beats_synthetic_vs_real.png"), dpi=90)
    plt.close(fig)
    print("wrote", ", ".join(sorted(f for f in os.listdir(args.out) if f.startswith("ecg_"))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
