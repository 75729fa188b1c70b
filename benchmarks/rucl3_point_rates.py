"""The α-RuCl3 point rates at d = 14.5 nm under each convention, against the paper's numbers.

The paper (appendix E.8, step 1) reports Γ = 54.0 s⁻¹ under F2 and 11,353.5 s⁻¹ under F1 for
a uniform layer at the crystallographic density, a ratio of about 210.  This script prints
nvbayes's rates (``nvbayes.physics.relaxation``, SI units) for the sheet of
``models/rucl3.toml`` and shows which convention moves which number:

* conventions of the prefactor (the factor 3 of Tetienne et al., the per-channel moment
  variance μ²/3, the field that sets the NV frequency) scale F1 and F2 alike;
* the F1/F2 ratio is set by the lateral extent of the coherent sum (the coherent field of an
  infinite uniform sheet is zero), so it is swept over the sheet radius.

Writes ``runs/rucl3-point-rates.md``.  Usage: ``python benchmarks/rucl3_point_rates.py``
"""

from __future__ import annotations

import math
from pathlib import Path

from nvbayes.data.rucl3_spec import load_ansatz
from nvbayes.physics.relaxation import (
    DIAMOND_100_POLAR_DEG,
    GYROMAGNETIC_RATIO,
    Flake,
    SpinBath,
    UniformDisc,
    field_variance,
    nv_axis,
    nv_frequency_hz,
    relaxation_rate,
)

NM = 1e-9


def main() -> None:
    spec = load_ansatz()
    c, paper = spec.constants, spec.paper
    d = 14.5 * NM
    bath = spec.bath
    rows = []

    def add(label, f2, f1):
        rows.append((label, f2, f1))

    sheet = UniformDisc(c.spin_density_m2, c.sheet_radius_nm * NM)
    for field in (0.0, *c.calibration_fields_gauss):
        add(f"nvbayes: 3 γe² ⟨B⊥²⟩ τc/(1+ω²τc²), μ²/3 per channel, B = {field:g} G "
            f"(f = {float(nv_frequency_hz(field)) / 1e9:.3f} GHz), radius "
            f"{c.sheet_radius_nm:g} nm",
            float(relaxation_rate(sheet, d, "F2", bath, field)),
            float(relaxation_rate(sheet, d, "F1", bath, field)))
    base_f2 = float(relaxation_rate(sheet, d, "F2", bath, 0.0))
    base_f1 = float(relaxation_rate(sheet, d, "F1", bath, 0.0))
    add("without the factor 3 (Γ = γe² ⟨B²⟩ S(ω)), 0 G", base_f2 / 3, base_f1 / 3)
    add("full μ² in every channel (no 1/3), 0 G", base_f2 * 3, base_f1 * 3)
    omega0 = 0.0
    tau = bath.tau_c_s
    zero_freq = 3 * GYROMAGNETIC_RATIO**2 * tau / (1 + (omega0 * tau) ** 2)
    add("spectral density at ω = 0 (τc only)",
        zero_freq * float(field_variance(sheet, d, "F2", bath)),
        zero_freq * float(field_variance(sheet, d, "F1", bath)))
    for radius in (math.sqrt(2) * 14.5, 50.0, 100.0, 1000.0, 10000.0, math.inf):
        disc = UniformDisc(c.spin_density_m2, radius * NM)
        add(f"sheet radius {radius:.4g} nm, 0 G", float(relaxation_rate(disc, d, "F2", bath)),
            float(relaxation_rate(disc, d, "F1", bath)))
    add("axial noise ⟨(B·n)²⟩ instead of the transverse ⟨B⊥²⟩ (z-axis NV), 0 G",
        float(relaxation_rate(sheet, d, "F2", bath, component="axial")),
        float(relaxation_rate(sheet, d, "F1", bath, component="axial")))
    tilted = nv_axis(DIAMOND_100_POLAR_DEG, 0.0)
    add("(100)-diamond NV at 54.7°, transverse, 0 G",
        float(relaxation_rate(sheet, d, "F2", bath, axis=tilted)),
        float(relaxation_rate(sheet, d, "F1", bath, axis=tilted)))
    for layers in (10, 100):
        flake = Flake(sheet, 0.57 * NM, (1.0,) * layers)
        add(f"flake of {layers} layers 0.57 nm apart, 0 G",
            float(relaxation_rate(flake, d, "F2", bath)),
            float(relaxation_rate(flake, d, "F1", bath)))
    paper_rates = spec.rates("paper")
    add(f"the paper convention (Γ_F2 = K d⁻⁴, Γ_F1 = K d⁻², K = {paper_rates.k:.6g} s⁻¹ nm⁴)",
        float(paper_rates.sheet(14.5, "F2")), float(paper_rates.sheet(14.5, "F1")))
    spin_half = SpinBath(math.sqrt(3.0), tau)   # g √(S(S+1)) μB with g = 2, S = 1/2
    add("moment of a bare spin 1/2, g = 2 (√3 μB), 0 G",
        float(relaxation_rate(sheet, d, "F2", spin_half)),
        float(relaxation_rate(sheet, d, "F1", spin_half)))

    lines = [
        "# α-RuCl3 point rates at d = 14.5 nm (uniform layer, 6.45e18 m^-2, 2.31 μB, "
        "τc = 0.41 ns)",
        "",
        f"Paper (appendix E.8): F2 {paper.rate_f2_per_s:g} s^-1, F1 {paper.rate_f1_per_s:g} "
        f"s^-1, ratio {paper.rate_f1_per_s / paper.rate_f2_per_s:.4f} "
        f"(= (14.5)^2 = {14.5**2:.4f}: the paper's F1/F2 ratio equals d^2 in nm^2).",
        "",
        "| convention | F2 [s^-1] | F2 / paper | F1 [s^-1] | F1 / paper | F1/F2 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, f2, f1 in rows:
        ratio = f1 / f2 if f2 > 0 else math.nan
        lines.append(f"| {label} | {f2:.4g} | {f2 / paper.rate_f2_per_s:.3g} | {f1:.4g} | "
                     f"{f1 / paper.rate_f1_per_s:.3g} | {ratio:.4g} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path("runs") / "rucl3-point-rates.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)
    print(f"written: {out}")


if __name__ == "__main__":
    main()
