"""Make any hub download or socket connection fail the test that asked for it."""
from __future__ import annotations

import socket


def refuse_network(monkeypatch) -> None:
    import huggingface_hub
    import huggingface_hub.file_download as fd

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]}")

    for mod, names in ((huggingface_hub, ("hf_hub_download", "snapshot_download", "model_info")),
                       (fd, ("hf_hub_download", "get_hf_file_metadata"))):
        for name in names:
            if hasattr(mod, name):
                monkeypatch.setattr(mod, name, refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    # The pack must switch the hub off itself, not rely on the environment.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
