"""The connection kit: one zip per device with what its firmware developer needs.

Layout (INTERFACES.md): ``params.json`` (the mqtt-params answer), ``README.md``, ``ca.pem`` when
securemode=2, ``signing/`` (the four signing functions) and one folder per example. The kit holds
the device secret (the examples sign at each connect), so making one is audited like a
credentials export.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from .device_code import (
    OLD_LIBRARY_BUFFER,
    PUBSUBCLIENT_BUFFER,
    connect_packet_size,
    example_files,
    fill,
    publish_topic,
    template_text,
)
from .models import AuditEvent
from .options import ConnectionOptions


@dataclass(frozen=True)
class ConnectionKit:
    filename: str
    content: bytes
    params: dict


def kit_filename(params: dict) -> str:
    """``{productId}-{deviceId}-kit.zip``, with ``:`` and ``@`` (allowed in ids, not in every
    file system's names) written as ``_``."""
    name = f"{params['productId']}-{params['deviceId']}-kit.zip"
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def _ca_pem(params) -> str | None:
    if params["securemode"] != 2:
        return None
    path = Path(settings.MQTT_CA_FILE)
    return path.read_text(encoding="ascii") if path.is_file() else None


def kit_readme(params: dict, ca_included: bool) -> str:
    size = connect_packet_size(params)
    if params["securemode"] == 2:
        transport = "TLS (securemode=2), checked against `ca.pem`"
        if not ca_included:
            transport += (
                " — this deployment offers no CA file: put the one your broker's operator gives "
                "you beside this README as `ca.pem`"
            )
    else:
        transport = "plain TCP (securemode=3), not encrypted"
    timestamp = (
        "each example signs with the current time (milliseconds), so the device's clock must be "
        "right" if params["timestamp"] is not None else "the examples sign without a timestamp"
    )
    return fill(
        template_text("kit_README.md"),
        {
            "PRODUCT_ID": params["productId"],
            "DEVICE_ID": params["deviceId"],
            "CLIENT_ID": params["clientId"],
            "HOST": params["host"],
            "PORT": str(params["port"]),
            "SIGNMETHOD": params["signmethod"],
            "TRANSPORT": transport,
            "TIMESTAMP": timestamp,
            "EXCLUSIVE": "yes" if params["exclusive"] else "no",
            "TOPIC": publish_topic(params),
            "SIZE": str(size),
            "SIZE_NOTE": _size_note(size),
        },
    )


def _size_note(size: int) -> str:
    if size > PUBSUBCLIENT_BUFFER:
        return (f"over {PUBSUBCLIENT_BUFFER} bytes: PubSubClient needs setBufferSize (the "
                "Arduino example sets 512)")
    if size > OLD_LIBRARY_BUFFER:
        return (f"over {OLD_LIBRARY_BUFFER} bytes: older clients with a 128-byte buffer cannot "
                "send it")
    return "small enough for every client named here"


def build_kit(device, options: ConnectionOptions | None = None, actor=None) -> ConnectionKit:
    """The kit for ``device`` with ``options`` (raises OptionError), recorded in the audit log."""
    params = device.connection_params(options)
    ca_pem = _ca_pem(params)
    files = {
        "README.md": kit_readme(params, ca_pem is not None),
        "params.json": json.dumps(params, indent=2, ensure_ascii=False) + "\n",
    }
    if ca_pem is not None:
        files["ca.pem"] = ca_pem
    files.update(example_files(params, device.device_secret, ca_pem))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, text in files.items():
            info = zipfile.ZipInfo(path, date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = 0o600 << 16  # it holds the device secret
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, text.encode("utf-8"))
    AuditEvent.record(
        AuditEvent.Action.DOWNLOAD_KIT, actor, [device],
        detail=f"connection kit, securemode={params['securemode']}, {params['signmethod']}",
    )
    return ConnectionKit(kit_filename(params), buffer.getvalue(), params)
