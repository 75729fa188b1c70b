"""What a benchmark computes: methods × inversion operators × samples × seeds.

A *cell* is one fit: the model specification of a method, the operator of its likelihood, one
sample of the data set and the seed of the fit.  The plan names the methods (each a resolved
:class:`~nvbayes.data.spec.ModelSpec`), the operators, the seeds and the number of samples, and
enumerates the cells in a fixed order (method, operator, sample, seed).

Presets pick the NeTMY specification behind the method name ``netmy``: ``fast`` is
``models/netmy-fast.toml`` (the CPU preset), ``paper`` is ``models/netmy.toml`` (Table 5 at the
paper's budgets).  The baselines have one specification each (their paper budgets) in both
presets.  A method may also be the path of a ``.toml`` file; its name is then the file's stem.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from nvbayes.data.spec import ModelSpec, NuisanceSpec, available_models, load_spec, with_nuisance
from nvbayes.errors import ParameterError
from nvbayes.inference.map import batchable
from nvbayes.model.problem import check_inversion_operator

PRESETS = {"fast": "netmy-fast", "paper": "netmy"}
DEFAULT_METHODS = ("netmy", "tikhonov", "admm", "gsplat")


@dataclass(frozen=True)
class Cell:
    """One fit of the benchmark; ``sample`` indexes the data set."""

    method: str
    operator: str
    sample: int
    seed: int

    @property
    def key(self) -> str:
        """A file-name-safe identity, e.g. ``netmy_F2_s0003_seed1``."""
        safe = "".join(c if c.isalnum() or c in "-+=." else "_" for c in self.method)
        return f"{safe}_{self.operator}_s{self.sample:04d}_seed{self.seed}"


@dataclass(frozen=True)
class BenchmarkPlan:
    """Methods (name → specification), operators, seeds, sample count and threads per cell.

    ``threads`` is the number of torch threads of every fit, whichever executor runs it, so
    that results do not depend on where a cell ran (torch's reductions may change with the
    thread count).  ``batch`` cells of a neural-field method that differ only in their sample
    are fitted in one optimization loop (:meth:`groups`; the results are those of single
    fits); ``device`` (cpu or cuda) and ``precision`` (fp32 or bf16) apply to every fit.
    """

    methods: dict
    operators: tuple[str, ...]
    seeds: tuple[int, ...]
    samples: int
    threads: int = 1
    sample_order: tuple = ()      # the order samples are visited; default 0 … samples − 1
    batch: int = 1
    device: str = "cpu"
    precision: str = "fp32"

    def __post_init__(self):
        if not self.methods:
            raise ParameterError("no methods to benchmark", "pass --methods, e.g. netmy,tikhonov")
        if not self.operators:
            raise ParameterError("no inversion operators", "pass --operators F1,F2")
        if not self.seeds or min(self.seeds) < 0:
            raise ParameterError(f"seeds must be >= 0, got {list(self.seeds)}",
                                 "pass --seeds 0,1,2")
        if len(set(self.seeds)) != len(self.seeds):
            raise ParameterError(f"repeated seed in {list(self.seeds)}", "list each seed once")
        if self.samples < 1:
            raise ParameterError("the data set holds no sample", "pass a data set")
        if self.threads < 1:
            raise ParameterError(f"threads per fit must be >= 1, got {self.threads}",
                                 "pass --threads 1 or more")

        if self.batch < 1:
            raise ParameterError(f"batch must be >= 1, got {self.batch}",
                                 "pass --batch 1 or more")
        if self.sample_order and sorted(self.sample_order) != list(range(self.samples)):
            raise ValueError("sample_order must be a permutation of the samples")

    def source(self, cell: Cell) -> Cell:
        """The cell whose fit gives ``cell``'s result: itself, or for a method whose fit does
        not depend on the seed (:attr:`ModelSpec.seeded`) the same cell at the first seed."""
        if self.methods[cell.method].seeded or cell.seed == self.seeds[0]:
            return cell
        return Cell(cell.method, cell.operator, cell.sample, self.seeds[0])

    def cells(self) -> list[Cell]:
        order = self.sample_order or tuple(range(self.samples))
        return [Cell(m, op, s, seed) for seed in self.seeds for s in order
                for op in self.operators for m in self.methods]


    def groups(self, cells: list[Cell]) -> list[list[Cell]]:
        """``cells`` in fitting groups: up to ``batch`` cells of one batchable method, operator
        and seed (in the order given) per group; every other cell alone."""
        groups: list[list[Cell]] = []
        open_groups: dict = {}
        for cell in cells:
            if self.batch == 1 or not batchable(self.methods[cell.method]):
                groups.append([cell])
                continue
            key = (cell.method, cell.operator, cell.seed)
            group = open_groups.get(key)
            if group is None or len(group) == self.batch:
                group = open_groups[key] = []
                groups.append(group)
            group.append(cell)
        return groups


def interleaved_order(labels) -> tuple[int, ...]:
    """Sample indices taking one of each label in turn (first of every class, then the
    second, …), so a partial benchmark covers every scene class."""
    rank: dict = {}
    keyed = []
    for i, label in enumerate(labels):
        keyed.append((rank.get(label, 0), i))
        rank[label] = rank.get(label, 0) + 1
    return tuple(i for _, i in sorted(keyed))


def parse_list(text: str, what: str) -> list[str]:
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise ParameterError(f"empty {what} list", f"pass a comma-separated {what} list")
    return items


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in parse_list(text, "seed"))
    except ValueError:
        raise ParameterError(f"seeds must be integers, got {text!r}",
                             "pass e.g. --seeds 0,1,2") from None


#: The suffix of a method fitted with the nuisance model (``--models lbfgs+nuisance``).
NUISANCE_SUFFIX = "+nuisance"


def parse_operators(text: str) -> tuple[str, ...]:
    ops = tuple(check_inversion_operator(op) for op in parse_list(text, "operator"))
    if len(set(ops)) != len(ops):
        raise ParameterError(f"repeated operator in {text!r}", "list each operator once")
    return ops


def resolve_methods(names: "str | list[str]", preset: str = "fast",
                    protocol: "str | None" = None) -> dict[str, ModelSpec]:
    """``{name: spec}`` for method names (``netmy`` follows the preset), ``.toml`` paths or
    trained models' ``.pt`` files,
    each resolved under ``protocol`` (default: its file's; see :mod:`nvbayes.data.spec`)."""
    if preset not in PRESETS:
        raise ParameterError(f"unknown preset {preset!r}", f"use one of {', '.join(PRESETS)}")
    if isinstance(names, str):
        names = parse_list(names, "method")
    methods: dict[str, ModelSpec] = {}
    for name in names:
        if name.endswith(NUISANCE_SUFFIX):         # the nuisance variant alone
            base = name[:-len(NUISANCE_SUFFIX)]
            for key, spec in resolve_methods([base], preset, protocol).items():
                key = key + NUISANCE_SUFFIX
                if key in methods:
                    raise ParameterError(f"method {key!r} is listed twice",
                                         "list each method once")
                methods[key] = dataclasses.replace(spec, name=key)
            continue
        if name.endswith((".toml", ".pt")):
            spec = load_spec(Path(name), protocol)
            key = spec.name if name.endswith(".pt") else Path(name).stem
        elif name == "netmy":
            spec, key = load_spec(PRESETS[preset], protocol), "netmy"
        elif name in available_models():
            spec, key = load_spec(name, protocol), name
        else:
            raise ParameterError(f"unknown method {name!r}",
                                 f"use netmy or one of {', '.join(available_models())}, "
                                 "or a .toml or trained .pt path")
        if key in methods:
            raise ParameterError(f"method {key!r} is listed twice", "list each method once")
        methods[key] = dataclasses.replace(spec, name=key) if key != spec.name else spec
    return methods


def nuisance_variants(methods: dict[str, ModelSpec], nuisance: NuisanceSpec
                      ) -> dict[str, ModelSpec]:
    """``methods`` and, beside each optimized one, ``NAME+nuisance``: the same method with the
    forward model's ``nuisance`` (:mod:`nvbayes.model.nuisance`), so that both are fitted on
    the same scenes (trained models and the paper's protocol have no nuisance terms).  A
    method listed as ``NAME+nuisance`` is fitted with the nuisances alone."""
    alone = [key for key in methods if key.endswith(NUISANCE_SUFFIX)]
    if alone and not nuisance.any:
        raise ParameterError(f"method {alone[0]!r} needs the nuisances it models",
                             "pass --nuisance, e.g. --nuisance background,standoff")
    if not nuisance.any:
        return methods
    out = {}
    for key, spec in methods.items():
        if spec.field.kind == "trained" or spec.protocol == "paper":
            if key in alone:
                raise ParameterError(f"method {key!r} cannot model nuisances",
                                     "list it without +nuisance (trained models and the "
                                     "paper's protocol have no nuisance terms)")
            out[key] = spec
            continue
        variant = key if key in alone else key + NUISANCE_SUFFIX
        if key not in alone:
            out[key] = spec
        out[variant] = dataclasses.replace(with_nuisance(spec, nuisance), name=variant)
    if not any(key.endswith(NUISANCE_SUFFIX) for key in out):
        raise ParameterError("--nuisance names no method that can model nuisances",
                             "add an optimized method under --protocol robust, or drop "
                             "--nuisance")
    return out

