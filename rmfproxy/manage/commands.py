"""The ``rmfproxy plan`` and ``rmfproxy consolidate`` commands: arguments, files, output.

Thin wrappers: the work is in :mod:`rmfproxy.manage.plan` and
:mod:`rmfproxy.manage.consolidate`, pure functions of validated configurations. Both
commands read configuration files *offline* (:func:`rmfproxy.config.parse_config_offline`):
no password or token is read, so they run on any machine with the files. Only
``consolidate --probe`` touches the network (one DESCRIBE per source, no credentials).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from rmfproxy.config import Config, ConfigError, load_document, parse_config_offline
from rmfproxy.manage.consolidate import (
    ConsolidationError,
    SiteInput,
    consolidate,
    source_key,
)
from rmfproxy.manage.plan import plan
from rmfproxy.manage.revisions import write_atomically
from rmfproxy.manage.suggest import SpareSpec


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number above 0, got {value!r}")
    return int(value)


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 < number < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {value!r}")
    return number


def load_offline(path: str | Path) -> Config:
    """A configuration file validated without reading any secret (:class:`ConfigError`)."""
    return parse_config_offline(load_document(path))


# plan -----------------------------------------------------------------------------


def add_plan_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``rmfproxy plan``."""
    p.add_argument("--config", required=True, help="YAML configuration file")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.add_argument(
        "--strict-sites",
        action="store_true",
        help="a camera left without a source by a site failure is an error (exit 1), "
        "not only a warning",
    )
    p.add_argument(
        "--suggest",
        action="store_true",
        help="propose the fewest new redundant recorders that would leave no error",
    )
    p.add_argument(
        "--spare-cameras",
        type=_positive_int,
        default=None,
        help="streams one new spare can serve (default: the largest existing recorder's)",
    )
    p.add_argument(
        "--spare-mbps",
        type=_positive_float,
        default=None,
        help="Mbit/s one new spare can serve (default: the largest existing recorder's)",
    )
    p.add_argument(
        "--spare-site",
        action="append",
        default=[],
        help="a site new spares may stand in (repeatable; default: a site of their own)",
    )


def cmd_plan(args: argparse.Namespace) -> int:
    """Print the coverage plan; 0 when it has no error, 1 with errors, 2 on a bad file."""
    try:
        cfg = load_offline(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    spares = None
    if args.suggest or args.spare_cameras or args.spare_mbps or args.spare_site:
        spares = SpareSpec(args.spare_cameras, args.spare_mbps, tuple(args.spare_site))
    report = plan(cfg, strict_sites=args.strict_sites, spares=spares)
    print(json.dumps(report.to_json(), indent=2) if args.json else report.to_text())
    return report.exit_code


# consolidate ----------------------------------------------------------------------


def add_consolidate_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``rmfproxy consolidate``."""
    p.add_argument(
        "files", nargs="*", metavar="FILE", help="site configuration files, in priority order"
    )
    p.add_argument(
        "--site",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="name the site of FILE (default: the file name without .yaml); a FILE not "
        "given as an argument is added after them (repeatable)",
    )
    p.add_argument("-o", "--output", default=None, help="the merged configuration file")
    p.add_argument("--dry-run", action="store_true", help="print the changes, write nothing")
    p.add_argument("--json", action="store_true", help="the change report as JSON")
    p.add_argument(
        "--probe",
        action="store_true",
        help="DESCRIBE every source (no credentials sent); a camera none of whose "
        "sources answers is written with pending: true",
    )
    p.add_argument(
        "--probe-timeout",
        type=_positive_float,
        default=3.0,
        help="seconds each DESCRIBE may take (default 3)",
    )


def _site_inputs(args: argparse.Namespace) -> list[SiteInput]:
    """The named, loaded inputs; ``ValueError`` or :class:`ConfigError` naming the file."""
    names: dict[str, str] = {}
    order = list(args.files)
    for item in args.site:
        name, sep, file = item.partition("=")
        if not sep or not name or not file:
            raise ValueError(f"--site must be NAME=FILE, got {item!r}")
        if file in names:
            raise ValueError(f"{file} is named twice by --site")
        names[file] = name
        if file not in order:
            order.append(file)
    if not order:
        raise ValueError("give the site configuration files to merge")
    if len(set(order)) != len(order):
        raise ValueError("a file is given twice")
    sites = []
    for file in order:
        try:
            cfg = load_offline(file)
        except ConfigError as exc:
            raise ConfigError(
                [(f"{file}: {where}", what) for where, what in exc.problems]
            ) from None
        sites.append(SiteInput(names.get(file, Path(file).stem), file, cfg))
    return sites


def cmd_consolidate(args: argparse.Namespace) -> int:
    """Merge site configurations; print the change report; write unless ``--dry-run``."""
    if args.output is None and not args.dry_run:
        print("rmfproxy: give -o FILE (or --dry-run)", file=sys.stderr)
        return 1
    try:
        sites = _site_inputs(args)
        if args.output is not None and any(
            Path(args.output).resolve() == Path(s.path).resolve() for s in sites
        ):
            raise ValueError(f"-o {args.output} is one of the inputs: write elsewhere")
        result = consolidate(sites)
        if args.probe:
            from rmfproxy.manage.probe import probe_all

            urls = [
                src["url"] for cam in result.document["cameras"].values() for src in cam["sources"]
            ]
            probed = asyncio.run(probe_all(urls, args.probe_timeout))
            result = consolidate(sites, probe={source_key(u): r for u, r in probed.items()})
    except (ConfigError, ConsolidationError) as exc:
        print(exc, file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"rmfproxy: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(result.to_text(output=args.output, dry_run=args.dry_run))
    if not args.dry_run:
        try:
            write_atomically(Path(args.output), result.to_yaml())
        except OSError as exc:
            print(f"rmfproxy: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
            return 1
        if not args.json:
            print(f"wrote {args.output}")
    return 0
