"""The serve config survives a device restart (FileStore): read back from ``_serve/default`` and served."""

from __future__ import annotations

from pathlib import Path

from pytsnet import ActorDevice
from pytsnet.serve import (
    SERVE_STATE_KEY,
    HTTPHandler,
    ServeConfig,
    TCPPortHandler,
    WebServerConfig,
    to_go_json,
)
from pytsnet.state import FileStore
from pytsnet.testing.tailnet import local_tailnet, wait_for_peers


def test_config_persisted_across_a_restart(tmp_path: Path) -> None:
    with local_tailnet(tmp_path, ["host", "peer"]) as tn:
        host = tn["host"]
        name = host.state.name.rstrip(".")
        cfg = ServeConfig(TCP={80: TCPPortHandler(HTTP=True)},
                          Web={f"{name}:80": WebServerConfig(Handlers={"/": HTTPHandler(Text="persisted")})})
        tag = host.set_serve_config_blocking(cfg)
        config = host.config
        host.close()
        assert isinstance(host.store, FileStore)
        assert FileStore.in_dir(tmp_path / "host").read_state(SERVE_STATE_KEY) == to_go_json(cfg)  # on disk

        with ActorDevice(config) as again:
            assert again.get_serve_config_blocking() == (cfg, tag)  # applied at start, before Running
            again.up_blocking(30)
            wait_for_peers(tn["peer"], ["host"])
            with tn["peer"].sync_http_client(timeout=20) as c:
                r = c.get("http://host/")
            assert (r.status_code, r.text) == (200, "persisted")
            again.set_serve_config_blocking(None)
            assert FileStore.in_dir(tmp_path / "host").read_state(SERVE_STATE_KEY) is None  # the key went
