"""``nvbayes import``: a lab file (npz, h5, mat, csv) to a validated measurement file."""

from __future__ import annotations

from pathlib import Path

from nvbayes.data.io import SPECTRUM_SCALES, write_netcdf
from nvbayes.data.lab import FORMATS, lab_measurement
from nvbayes.errors import NvbayesError
from nvbayes.physics.units import UNIT_KINDS

from .common import nv_axis_argument

DESCRIPTION = (
    "Read the arrays a lab program wrote (NumPy .npz, HDF5, MATLAB .mat, or a long csv table "
    "with one row per readout) and write a validated nvbayes measurement (.nc).  The spectrum's "
    "axis order is given with --dims or inferred: the one axis as long as the frequency array "
    "is freq, the other two are (y, x).  Frequencies and pixel positions may come in any order "
    "and spacing along freq; they are sorted.  The mask is true (nonzero) on the pixels to use.")


def add_arguments(p) -> None:
    p.add_argument("file", type=Path, help="the lab file")
    p.add_argument("--format", required=True, choices=FORMATS, help="the file's format")
    p.add_argument("--spectrum", required=True,
                   help="name of the spectrum array (csv: of the value column)")
    p.add_argument("--freq", required=True, help="name of the frequency array, GHz")
    p.add_argument("--x", help="name of the x positions, nm (csv: pixel indices with "
                               "--spacing-nm)")
    p.add_argument("--y", help="name of the y positions, nm")
    p.add_argument("--spacing-nm", type=float, help="pixel spacing, nm, instead of --x/--y "
                                                    "(arrays) or for index columns (csv)")
    p.add_argument("--dims", help="the spectrum's axis order, e.g. y,x,freq (default: "
                                  "inferred from the frequency length)")
    p.add_argument("--standoff-nm", type=float, required=True, help="NV standoff z0, nm")
    p.add_argument("--linewidth-ghz", type=float, required=True,
                   help="Lorentzian linewidth, GHz")
    p.add_argument("--band", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="Larmor band, GHz (default: the readout span less a linewidth each "
                        "side)")
    p.add_argument("--units", default="normalized", choices=UNIT_KINDS,
                   help="the spectrum's units: si or normalized (normalized)")
    p.add_argument("--mask", help="name of the pixel mask (nonzero: use the pixel)")
    p.add_argument("--sigma", help="name of the noise sigma of one readout (a number or a "
                                   "(y, x) map)")
    nv_axis_argument(p)
    p.add_argument("--spectrum-scale", choices=SPECTRUM_SCALES,
                   help="absolute: the spectrum is in the operator's units; arbitrary: any "
                        "scale (default: absolute with --sigma, else arbitrary)")
    p.add_argument("--out", type=Path, required=True, help="output .nc")


def run(args) -> None:
    if args.out.suffix != ".nc":
        raise NvbayesError(f"--out {args.out} is not a .nc file", "name the output FILE.nc")
    if args.out.resolve() == args.file.resolve():
        raise NvbayesError("--out is the input file", "write the measurement to another path")
    dims = None if args.dims is None else args.dims.split(",")
    dataset = lab_measurement(
        args.file, args.format, spectrum=args.spectrum, freq=args.freq, x=args.x, y=args.y,
        mask=args.mask, sigma=args.sigma, spacing_nm=args.spacing_nm, dims=dims,
        standoff_nm=args.standoff_nm, linewidth_ghz=args.linewidth_ghz,
        band=None if args.band is None else tuple(args.band), units=args.units,
        nv_axis=args.nv_axis, spectrum_scale=args.spectrum_scale)
    write_netcdf(dataset, args.out)
    ny, nx = dataset.sizes["y"], dataset.sizes["x"]
    used = int(dataset["mask"].sum()) if "mask" in dataset else ny * nx
    print(f"{args.out}: {dataset.sizes['freq']} frequencies on {ny} x {nx} pixels "
          f"({used} used)")
