"""The proxy application: one feed per configured camera behind one RTSP server."""

from __future__ import annotations

import structlog

from rmfproxy.config import Config
from rmfproxy.relay.feed import Feed, _Listener
from rmfproxy.serve.access import AccessControl, User
from rmfproxy.serve.server import RtspServer
from rmfproxy.upstream.source import RtspSource

log = structlog.get_logger(__name__)


def _split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class Proxy:
    """Builds feeds and the client-facing server from a validated :class:`Config`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.feeds: dict[str, Feed] = {}
        for cam_id, cam in config.cameras.items():

            def make(
                index: int, listener: _Listener, cam_id: str = cam_id, cam: object = cam
            ) -> tuple[str, RtspSource]:
                cfg = config.cameras[cam_id]
                src = cfg.sources[index]
                name = cfg.source_name(index)
                secret = src.resolve_password()
                return name, RtspSource(
                    src.url,
                    listener,
                    transport=src.transport,
                    username=src.username,
                    password=secret.value if secret else None,
                    name=f"{cam_id}/{name}",
                )

            self.feeds[cam_id] = Feed(
                cam_id,
                make,
                len(cam.sources),
                stall_floor=cam.stall_timeout,
                stall_ceiling=cam.stall_timeout_max,
                failback_hold=cam.failback_hold,
                hitless=cam.hitless,
                outage_limit=cam.outage_limit,
            )
        access = None
        if config.rtsp.users:
            users = []
            for u in config.rtsp.users:
                secret = u.resolve_password()
                assert secret is not None  # validated by parse_config
                paths = None if u.cameras == "*" else frozenset(u.cameras)
                users.append(User(u.name, secret.value, paths))
            access = AccessControl(users, config.rtsp.realm)
        host, port = _split_listen(config.rtsp.listen)
        self.server = RtspServer(
            self.feeds.get,
            host=host,
            port=port,
            session_timeout=config.rtsp.session_timeout,
            access=access,
            client_buffer_bytes=config.rtsp.client_buffer_bytes,
            udp_rtp_port=config.rtsp.udp_rtp_port,
        )

    async def start(self) -> None:
        """Start pulling every source and serving clients."""
        for feed in self.feeds.values():
            feed.start()
        await self.server.start()
        log.info("proxy.started", cameras=len(self.feeds), rtsp_port=self.server.port)

    async def stop(self) -> None:
        """Stop serving, then stop every feed."""
        await self.server.close()
        for feed in self.feeds.values():
            await feed.stop()
        log.info("proxy.stopped")

    def url(self, camera: str) -> str:
        """The client URL of a camera."""
        return self.server.url(camera)
