"""Site consolidation: several sites' configurations merged into one proxy's.

Theory of operation.

- **Cameras are matched by a durable identity, never by their key.** A camera's
  identity is its ``id`` (a serial number or VMS GUID) when it has one, else the
  upstream address of its first source: ``host:port/path?query`` (host lower case,
  default port filled in, no user). Keys are display names that two sites may use for
  different cameras, or that one site may have renamed. Cameras with one identity in
  several sites are **one camera**: its sources are the first site's, then each
  further site's that are not already there (same URL, same stream: one source), in
  the sites' order; its other settings (and its key) are the first site's. Give every
  site's copy the same ``id`` or none: an ``id`` in one site and not the other makes
  two cameras.
- **Keys.** A camera keeps its key unless two *different* cameras would share it;
  then every one of them gets its site's name as a prefix (``a-lobby``, ``b-lobby``).
  All of them, not only the later ones: a client of either site that still asks for
  ``lobby`` then gets 404 instead of silently another site's camera. A source name
  taken in the camera by another URL gets ``-<site>`` appended.
- **Users keep exactly the cameras they had.** A user's rights in a site (its list,
  or every camera of *that* site for ``"*"``) are renamed to the merged keys. The
  merged user lists them explicitly, never ``"*"``: a camera of another site, or one
  added later, is not granted by accident. A user name found in several sites is one
  user (one login) with the union of what each site gave it, and only if each site
  takes its password from the same reference (``password_env`` / ``password_file``);
  otherwise the merge fails naming the user: two people may share a name, and either
  password opening the other's cameras would widen rights. A site without users (an
  open server) contributes none: in the merged file only listed users can read its
  cameras (noted in the report).
- **Secrets stay references.** Nothing is resolved: ``password_env`` and
  ``password_file`` are copied as written (the inputs are validated offline,
  :func:`rmfproxy.config.parse_config_offline`).
- **The rest comes from the first site.** ``rtsp`` (listener, limits, realm), ``api``,
  ``log`` and ``archive`` are the first file's (differences are noted); ``recorders``
  (the planner's section) are merged by name and must agree; ``revision`` starts over.
- **Pending.** ``pending: true`` stays when every site's copy says so. With a probe
  (:mod:`rmfproxy.manage.probe`) it is recomputed: true exactly when none of the
  camera's sources answered. A pending camera is configured and relayed as any other;
  ``rmfproxy plan`` lists it.
- The merged document is validated again before it is returned: the result passes
  ``rmfproxy check`` wherever the referenced secrets exist.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from rmfproxy.config import (
    CameraConfig,
    Config,
    ConfigError,
    RecorderConfig,
    UserConfig,
    parse_config_offline,
)
from rmfproxy.manage.probe import ProbeResult
from rmfproxy.upstream.url import host_port, split_credentials

_SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
_MAX_KEY = 64
"""Longest camera key (it is the URL path; :class:`rmfproxy.config.Config`)."""


class ConsolidationError(ValueError):
    """The sites cannot be merged; ``problems`` lists ``(where, message)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {where}: {what}" for where, what in problems)
        super().__init__(f"cannot consolidate ({len(problems)} problem(s)):\n{lines}")


@dataclass(frozen=True)
class SiteInput:
    """One site's configuration, validated offline."""

    name: str
    """Prefix for its clashing camera keys."""
    path: str
    config: Config


@dataclass(frozen=True)
class CameraChange:
    """What became of one site's camera."""

    site: str
    key: str
    new_key: str
    identity: str
    """``id:<id>`` or ``url:<host:port/path?query>``."""
    action: Literal["kept", "renamed", "merged"]
    """``merged``: an earlier site has the same camera, this copy joined it."""
    why: str
    sources_added: tuple[str, ...]
    """Source URLs (without user) this copy contributed."""
    sources_known: tuple[str, ...]
    """Source URLs an earlier site already gave."""
    also_in: tuple[str, ...]
    """Later sites with the same camera."""

    def to_json(self) -> dict[str, Any]:
        """The change as JSON data."""
        return {
            "site": self.site,
            "key": self.key,
            "new_key": self.new_key,
            "identity": self.identity,
            "action": self.action,
            "why": self.why,
            "sources_added": list(self.sources_added),
            "sources_known": list(self.sources_known),
            "also_in": list(self.also_in),
        }


@dataclass(frozen=True)
class UserRights:
    """One merged user: its rights in each site before, and after the merge."""

    name: str
    password: str
    """Where its password comes from (``password_env NAME`` or ``password_file PATH``)."""
    before: dict[str, list[str] | Literal["*"]]
    """Site -> the rights as written there (that site's keys)."""
    expanded: dict[str, list[str]]
    """Site -> those rights as merged keys (``*`` expanded to that site's cameras)."""
    after: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """The user as JSON data."""
        return {
            "name": self.name,
            "password": self.password,
            "before": self.before,
            "expanded": self.expanded,
            "after": list(self.after),
        }


@dataclass(frozen=True)
class Consolidation:
    """The merged document and the report of every change."""

    sites: tuple[tuple[str, str], ...]
    """``(name, path)`` of each input, in order."""
    document: dict[str, Any]
    cameras: tuple[CameraChange, ...]
    users: tuple[UserRights, ...]
    pending: dict[str, str]
    """Merged key -> why it is pending."""
    notes: tuple[str, ...]

    def to_yaml(self) -> str:
        """The merged configuration file, with a header saying where it came from."""
        inputs = "".join(f"#   {name}: {path}\n" for name, path in self.sites)
        first = self.sites[0][0]
        header = (
            "# Merged by `rmfproxy consolidate` from these sites, in priority order:\n"
            f"{inputs}"
            f"# rtsp (listener, limits), api, log and archive come from site {first}; every\n"
            "# user keeps exactly the cameras its sites gave it, under the keys below.\n"
            "# Secrets are references (password_env / password_file): provide them here.\n\n"
        )
        body = yaml.safe_dump(
            self.document, sort_keys=False, default_flow_style=False, allow_unicode=True
        )
        return header + body

    def to_json(self) -> dict[str, Any]:
        """The report and the document as JSON data."""
        return {
            "sites": [{"name": n, "path": p} for n, p in self.sites],
            "cameras": [c.to_json() for c in self.cameras],
            "users": [u.to_json() for u in self.users],
            "pending": self.pending,
            "notes": list(self.notes),
            "document": self.document,
        }

    def to_text(self, *, output: str | None = None, dry_run: bool = False) -> str:
        """The reviewable change report: per site its cameras, per user its rights."""
        target = output or "(no output file)"
        lines = [
            f"consolidate {len(self.sites)} site(s) -> {target}"
            + (" (dry run: nothing written)" if dry_run else "")
        ]
        for name, path in self.sites:
            cams = [c for c in self.cameras if c.site == name]
            lines += ["", f"site {name} ({path}): {len(cams)} camera(s)"]
            width = max([1, *(len(c.key) for c in cams)])
            for c in cams:
                arrow = c.key if c.new_key == c.key else f"{c.key} -> {c.new_key}"
                detail = [c.why] if c.why else []
                if c.action == "merged":
                    detail.append(
                        f"+{len(c.sources_added)} source(s), {len(c.sources_known)} already there"
                    )
                if c.also_in:
                    detail.append(f"merged with the same camera of {', '.join(c.also_in)}")
                tail = f"  ({'; '.join(detail)})" if detail else ""
                lines.append(f"  {c.action:<8} {arrow:<{width + 4}}{tail}".rstrip())
        lines += ["", "users (camera rights per site before -> after):"]
        if not self.users:
            lines.append("  none (the merged server is open, as every site was)")
        for u in self.users:
            lines.append(f"  {u.name} ({u.password})")
            for site, rights in u.before.items():
                shown = ", ".join(u.expanded[site]) or "-"
                was = "*" if rights == "*" else ", ".join(rights) or "-"
                renamed = (
                    "" if rights != "*" and list(rights) == u.expanded[site] else f" -> {shown}"
                )
                lines.append(f"    site {site}: {was}{renamed}")
            lines.append(f"    after: {', '.join(u.after) or '-'} ({len(u.after)})")
        if self.pending:
            lines += ["", "pending cameras (written with pending: true):"]
            lines += [f"  {cam}: {why}" for cam, why in self.pending.items()]
        cams = self.document["cameras"]
        sources = sum(len(c["sources"]) for c in cams.values())
        lines += [
            "",
            f"result: {len(cams)} camera(s), {sources} source(s), {len(self.users)} user(s), "
            f"{len(self.document.get('recorders', {}))} recorder(s)",
        ]
        if self.notes:
            lines += ["notes:", *(f"  - {n}" for n in self.notes)]
        return "\n".join(lines)


def source_key(url: str) -> str:
    """A source URL compared as a stream: scheme and host lower case, default port, no user."""
    clean = split_credentials(url)[0]
    host, port = host_port(clean)
    scheme, _, rest = clean.partition("://")
    path = rest[rest.find("/") :] if "/" in rest else "/"
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}{path}"


def camera_identity(cam: CameraConfig) -> str:
    """``id:<id>``, or ``url:`` and the upstream ``host:port/path?query`` of the first source."""
    if cam.id is not None:
        return f"id:{cam.id}"
    return "url:" + source_key(cam.sources[0].url).partition("://")[2]


@dataclass
class _Member:
    site: SiteInput
    key: str
    camera: CameraConfig


@dataclass
class _Group:
    identity: str
    members: list[_Member]
    new_key: str = ""


def consolidate(
    sites: list[SiteInput], probe: Mapping[str, ProbeResult] | None = None
) -> Consolidation:
    """Merge ``sites`` (in priority order); ``probe`` maps :func:`source_key` to what a
    DESCRIBE found. :class:`ConsolidationError` lists every problem."""
    problems: list[tuple[str, str]] = []
    notes: list[str] = []
    if not sites:
        raise ConsolidationError([("(input)", "no site to merge")])
    names = [s.name for s in sites]
    for s in sites:
        if not _SITE_NAME.match(s.name):
            problems.append(
                (
                    f"site {s.name!r} ({s.path})",
                    "a site name is 1-32 letters, digits, '_', '.', '-' (it prefixes camera "
                    "keys): name it with --site NAME=FILE",
                )
            )
        elif names.count(s.name) > 1:
            problems.append((f"site {s.name}", "two inputs have this site name: use --site"))
    if problems:
        raise ConsolidationError(problems)

    groups = _group_cameras(sites, problems)
    _assign_keys(groups, problems)
    if problems:
        raise ConsolidationError(problems)
    key_of = {(m.site.name, m.key): g.new_key for g in groups for m in g.members}

    cameras: dict[str, Any] = {}
    changes: list[CameraChange] = []
    pending: dict[str, str] = {}
    for g in groups:
        doc, group_changes, why_pending = _merge_group(g, probe, notes)
        cameras[g.new_key] = doc
        changes += group_changes
        if why_pending:
            pending[g.new_key] = why_pending
    changes.sort(key=lambda c: names.index(c.site))

    users = _merge_users(sites, key_of, list(cameras), problems, notes)
    recorders = _merge_recorders(sites, problems)
    if problems:
        raise ConsolidationError(problems)

    first = sites[0]
    _note_first_site_sections(sites, notes)
    rtsp = first.config.rtsp.model_dump(mode="json", exclude_unset=True)
    rtsp.pop("users", None)
    if users:
        rtsp["users"] = [
            {"name": u.name, **_password_ref(u_cfg), "cameras": list(u.after)} for u, u_cfg in users
        ]
    document: dict[str, Any] = {}
    if rtsp:
        document["rtsp"] = rtsp
    for section in ("api", "log", "archive"):
        dumped = getattr(first.config, section).model_dump(mode="json", exclude_unset=True)
        if dumped:
            document[section] = dumped
    if recorders:
        document["recorders"] = recorders
    document["cameras"] = cameras
    try:
        parse_config_offline(document)
    except ConfigError as exc:  # a bug here, not the user's: say so with the fields
        raise ConsolidationError(
            [(f"merged {where}", what) for where, what in exc.problems]
        ) from None
    return Consolidation(
        sites=tuple((s.name, s.path) for s in sites),
        document=document,
        cameras=tuple(changes),
        users=tuple(u for u, _ in users),
        pending=pending,
        notes=tuple(notes),
    )


def _group_cameras(sites: list[SiteInput], problems: list[tuple[str, str]]) -> list[_Group]:
    groups: dict[str, _Group] = {}
    for site in sites:
        seen: dict[str, str] = {}
        for key, cam in site.config.cameras.items():
            identity = camera_identity(cam)
            if identity in seen:
                problems.append(
                    (
                        f"site {site.name} cameras {seen[identity]} and {key}",
                        f"both are {identity}: a site lists each camera once (give "
                        "different cameras different ids)",
                    )
                )
                continue
            seen[identity] = key
            groups.setdefault(identity, _Group(identity, [])).members.append(
                _Member(site, key, cam)
            )
    return list(groups.values())


def _assign_keys(groups: list[_Group], problems: list[tuple[str, str]]) -> None:
    wanted: dict[str, list[_Group]] = {}
    for g in groups:
        wanted.setdefault(g.members[0].key, []).append(g)
    for key, clashing in wanted.items():
        for g in clashing:
            g.new_key = key if len(clashing) == 1 else f"{g.members[0].site.name}-{key}"
    owner: dict[str, _Group] = {}
    for g in groups:
        first = g.members[0]
        if len(g.new_key) > _MAX_KEY:
            problems.append(
                (
                    f"site {first.site.name} camera {first.key}",
                    f"its key clashes and {g.new_key!r} is longer than {_MAX_KEY} characters: "
                    "shorten the key or the site name",
                )
            )
        elif g.new_key in owner:
            other = owner[g.new_key].members[0]
            problems.append(
                (
                    f"camera key {g.new_key}",
                    f"camera {first.key} of site {first.site.name} and camera {other.key} of "
                    f"site {other.site.name} would both get it (a clash is prefixed with the "
                    "site name): rename one of them",
                )
            )
        else:
            owner[g.new_key] = g


def _merge_group(
    g: _Group, probe: Mapping[str, ProbeResult] | None, notes: list[str]
) -> tuple[dict[str, Any], list[CameraChange], str]:
    """The merged camera document, the change of each member, and why it is pending."""
    first = g.members[0]
    doc = first.camera.model_dump(mode="json", exclude_unset=True)
    doc.pop("pending", None)
    sources: list[dict[str, Any]] = []
    by_key: dict[str, dict[str, Any]] = {}
    names: set[str] = set()
    changes = []
    compared = _settings(first.camera)
    for i, m in enumerate(g.members):
        added, known = [], []
        for src in m.camera.sources:
            key = source_key(src.url)
            src_doc = src.model_dump(mode="json", exclude_unset=True)
            shown = split_credentials(src.url)[0]
            if key in by_key:
                known.append(shown)
                kept = by_key[key]
                if _stream_fields(kept) != _stream_fields(src_doc):
                    notes.append(
                        f"camera {g.new_key}: site {m.site.name} gives source {shown} other "
                        f"settings (name, user, password reference, transport) than an "
                        "earlier site: the earlier site's are kept"
                    )
                continue
            name = src_doc.get("name")
            if name is not None and name in names:
                renamed = _free_name(f"{name}-{m.site.name}", names)
                notes.append(
                    f"camera {g.new_key}: source name {name} of site {m.site.name} "
                    f"({shown}) is taken by another URL: named {renamed}"
                )
                src_doc["name"] = name = renamed
            if name is not None:
                names.add(name)
            by_key[key] = src_doc
            sources.append(src_doc)
            added.append(shown)
        if i and _settings(m.camera) != compared:
            differing = sorted(k for k, v in _settings(m.camera).items() if compared.get(k) != v)
            notes.append(
                f"camera {g.new_key}: site {m.site.name} sets {', '.join(differing)} "
                f"differently: site {first.site.name}'s settings are kept"
            )
        if i:
            action: Literal["kept", "renamed", "merged"] = "merged"
            why = f"same camera as {first.key} of site {first.site.name}, by {g.identity}"
        elif g.new_key != m.key:
            action, why = "renamed", "key also used by a different camera of another site"
        else:
            action, why = "kept", ""
        also = tuple(x.site.name for x in g.members[1:]) if i == 0 else ()
        changes.append(
            CameraChange(
                m.site.name,
                m.key,
                g.new_key,
                g.identity,
                action,
                why,
                tuple(added),
                tuple(known),
                also,
            )
        )
    doc["sources"] = sources
    why_pending = ""
    if probe is None:
        if all(m.camera.pending for m in g.members):
            why_pending = "marked pending in " + ", ".join(m.site.name for m in g.members)
    else:
        results = [probe.get(source_key(s["url"])) for s in sources]
        if not any(r is not None and r.reachable for r in results):
            why_pending = "no source answered: " + "; ".join(
                f"{split_credentials(s['url'])[0]}: {r.detail if r else 'not probed'}"
                for s, r in zip(sources, results, strict=True)
            )
    if why_pending:
        doc["pending"] = True
    return doc, changes, why_pending


def _settings(cam: CameraConfig) -> dict[str, Any]:
    """A camera's own settings, defaults included, without its sources and identity."""
    return cam.model_dump(mode="json", exclude={"sources", "id", "pending"})


def _stream_fields(src: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(
        src.get(k) for k in ("name", "username", "password_env", "password_file", "transport")
    )


def _free_name(wanted: str, taken: set[str]) -> str:
    name, n = wanted, 2
    while name in taken:
        name, n = f"{wanted}-{n}", n + 1
    return name


def _password_ref(user: UserConfig) -> dict[str, str]:
    if user.password_env is not None:
        return {"password_env": user.password_env}
    if user.password_file is not None:
        return {"password_file": str(user.password_file)}
    return {}


def _describe_ref(user: UserConfig) -> str:
    ref = _password_ref(user)
    return " ".join(next(iter(ref.items()))) if ref else "no password reference"


def _merge_users(
    sites: list[SiteInput],
    key_of: dict[tuple[str, str], str],
    order: list[str],
    problems: list[tuple[str, str]],
    notes: list[str],
) -> list[tuple[UserRights, UserConfig]]:
    merged: dict[str, tuple[UserConfig, str, dict[str, Any], dict[str, list[str]]]] = {}
    open_sites = []
    for site in sites:
        users = site.config.rtsp.users
        if not users:
            open_sites.append(site.name)
        for user in users:
            written: list[str] | Literal["*"] = "*" if user.cameras == "*" else list(user.cameras)
            keys = list(site.config.cameras) if user.cameras == "*" else user.cameras
            renamed = [key_of[(site.name, k)] for k in keys]
            if user.name not in merged:
                merged[user.name] = (user, site.name, {}, {})
            first, first_site, before, expanded = merged[user.name]
            if _password_ref(first) != _password_ref(user):
                problems.append(
                    (
                        f"user {user.name}",
                        f"site {first_site} takes its password from {_describe_ref(first)}, "
                        f"site {site.name} from {_describe_ref(user)}: one user name must "
                        "have one password (rename one of the users, or give both the same "
                        "reference)",
                    )
                )
                continue
            before[site.name] = written
            expanded[site.name] = renamed
    out = []
    for name, (user, _, before, expanded) in merged.items():
        granted = {k for keys in expanded.values() for k in keys}
        after = tuple(k for k in order if k in granted)
        out.append((UserRights(name, _describe_ref(user), before, expanded, after), user))
    if open_sites and out:
        notes.append(
            f"site(s) {', '.join(open_sites)} had no users (any client could read their "
            "cameras): in the merged configuration only the listed users can, and none of "
            "them was given those cameras"
        )
    elif open_sites:
        notes.append("no site has users: the merged RTSP server is open, as each site was")
    return out


def _merge_recorders(sites: list[SiteInput], problems: list[tuple[str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    first: dict[str, tuple[RecorderConfig, str]] = {}
    for site in sites:
        for name, rec in site.config.recorders.items():
            if name not in first:
                first[name] = (rec, site.name)
                out[name] = rec.model_dump(mode="json", exclude_unset=True)
            elif rec != first[name][0]:
                problems.append(
                    (
                        f"recorders.{name}",
                        f"sites {first[name][1]} and {site.name} describe it differently "
                        "(site, capacity): make them agree",
                    )
                )
    return out


def _note_first_site_sections(sites: list[SiteInput], notes: list[str]) -> None:
    first = sites[0]
    for section in ("rtsp", "api", "log", "archive"):
        exclude = {"users"} if section == "rtsp" else set()
        ref = getattr(first.config, section).model_dump(mode="json", exclude=exclude)
        for site in sites[1:]:
            other = getattr(site.config, section).model_dump(mode="json", exclude=exclude)
            if other != ref:
                fields = sorted(k for k in {*ref, *other} if ref.get(k) != other.get(k))
                notes.append(
                    f"{section} of site {site.name} differs ({', '.join(fields)}): "
                    f"site {first.name}'s is used"
                )
