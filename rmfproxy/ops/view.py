"""What the admin API and the metrics read of the running proxy.

A protocol rather than the proxy's class: ``ops/`` sits below the composition root
(:mod:`rmfproxy.app`), which builds it, so it names only the parts it reads. A feed is
read through :func:`rmfproxy.relay.snapshot.snapshot`, never through its attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rmfproxy.archive.playback import StitchedPlayback
    from rmfproxy.archive.runner import CoverageJournal
    from rmfproxy.config import Config
    from rmfproxy.manage.revisions import ConfigKeeper
    from rmfproxy.relay.feed import Feed
    from rmfproxy.serve.server import RtspServer


class ProxyView(Protocol):
    """The running proxy as ``ops/`` sees it (:class:`rmfproxy.app.Proxy` is one)."""

    @property
    def config(self) -> Config:
        """The configuration running now."""

    @property
    def feeds(self) -> Mapping[str, Feed]:
        """One feed per camera, in configuration order."""

    @property
    def keeper(self) -> ConfigKeeper:
        """The running document, its revision and the pair's conflicts."""

    @property
    def journal(self) -> CoverageJournal | None:
        """The coverage journal, or None."""

    @property
    def playback(self) -> StitchedPlayback | None:
        """Stitched playback over RTSP, or None."""

    @property
    def server(self) -> RtspServer:
        """The client-facing RTSP server."""
