"""Display helpers for the console: parameter text, the "copy all" JSON and the snippets.

Snippets are built here, on the server, so that every value is quoted by ``shlex.quote`` (shell)
or ``repr`` (Python): ``|`` and ``&`` in mqttClientId and mqttUsername are the commonest
copy-paste failure when they are pasted into a shell unquoted.
"""

import json
import shlex

from django import template
from django.utils.translation import gettext as _

from devices.device_code import signing_source

register = template.Library()


@register.filter
def param_text(params, key):
    """A parameter as text, written as in the JSON answer (true/false, empty for null)."""
    value = params.get(key)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@register.filter
def get_count(counts, key):
    return counts.get(key, 0)


def alibaba_json_text(params) -> str:
    """The "copy all" JSON in the shape Alibaba Cloud's console uses, for existing tooling."""
    return json.dumps(
        {
            "clientId": params["mqttClientId"],
            "username": params["mqttUsername"],
            "mqttHostUrl": params["host"],
            "passwd": params["mqttPassword"],
            "port": params["port"],
        },
        ensure_ascii=False,
    )


@register.filter
def alibaba_json(params):
    return alibaba_json_text(params)


def topics(params):
    """A topic inside the device's own space (spec §4): subscribe to all, publish to one."""
    base = f"/{params['productId']}/{params['deviceId']}"
    return f"{base}/#", f"{base}/user/update"


def build_snippets(params) -> list[dict]:
    """mosquitto_sub/pub, paho-mqtt 2.x and MQTTX CLI commands for these parameters."""
    q = shlex.quote
    tls = params["securemode"] == 2
    sub_topic, pub_topic = topics(params)
    common = (
        f"-h {q(params['host'])} -p {params['port']} -V mqttv311 \\\n"
        f"  -i {q(params['mqttClientId'])} \\\n"
        f"  -u {q(params['mqttUsername'])} \\\n"
        f"  -P {q(params['mqttPassword'])}"
    )
    if tls:
        common += " \\\n  --cafile ca.pem"
    mosquitto_sub = f"mosquitto_sub {common} \\\n  -q 1 -v -t {q(sub_topic)}"
    mosquitto_pub = f"mosquitto_pub {common} \\\n  -q 1 -t {q(pub_topic)} -m {q('hello')}"

    tls_line = '\nclient.tls_set(ca_certs="ca.pem")' if tls else ""
    python = f"""import paho.mqtt.client as mqtt  # paho-mqtt 2.x


def on_connect(client, userdata, flags, reason_code, properties):
    print("connected:", reason_code)
    if not reason_code.is_failure:
        client.subscribe({sub_topic!r}, qos=1)
        client.publish({pub_topic!r}, "hello", qos=1)


def on_message(client, userdata, message):
    print(message.topic, message.payload)


client = mqtt.Client(
    mqtt.CallbackAPIVersion.VERSION2,
    client_id={params['mqttClientId']!r},
    protocol=mqtt.MQTTv311,
)
client.username_pw_set({params['mqttUsername']!r}, {params['mqttPassword']!r}){tls_line}
client.on_connect = on_connect
client.on_message = on_message
client.connect({params['host']!r}, {params['port']}, keepalive=60)
client.loop_forever()
"""
    mqttx = (
        f"mqttx sub -h {q(params['host'])} -p {params['port']} -V 3.1.1 \\\n"
        f"  -i {q(params['mqttClientId'])} \\\n"
        f"  -u {q(params['mqttUsername'])} \\\n"
        f"  -P {q(params['mqttPassword'])} \\\n"
        + ("  -l mqtts --ca ca.pem \\\n" if tls else "")
        + f"  -q 1 -t {q(sub_topic)}"
    )
    return [
        {"id": "mosquitto-sub", "title": _("mosquitto_sub (listen)"), "text": mosquitto_sub,
         "note": _("Receives what the portal sends to the device: keep it running and send a "
                   "message from the Messages section of this page.")},
        {"id": "mosquitto-pub", "title": _("mosquitto_pub (send one message)"),
         "text": mosquitto_pub,
         "note": _("Publishes once as the device and exits: start a trace in the Messages "
                   "section to see the message arrive.")},
        {"id": "python", "title": _("Python (paho-mqtt 2.x)"), "text": python},
        {"id": "mqttx", "title": _("MQTTX CLI"), "text": mqttx},
    ]


def device_signing_snippets() -> list[dict]:
    """The signing functions firmware runs at each connect (the kit's ``signing/`` files)."""
    return [
        {"id": "sign-mbedtls", "title": _("Signing in C with mbedTLS (ESP-IDF, Arduino-ESP32)"),
         "text": signing_source("mbedtls")},
        {"id": "sign-openssl", "title": _("Signing in C with OpenSSL (Linux gateways)"),
         "text": signing_source("openssl")},
        {"id": "sign-node", "title": _("Signing in Node.js (crypto.createHmac)"),
         "text": signing_source("node")},
        {"id": "sign-micropython", "title": _("Signing in MicroPython (hmac from micropython-lib)"),
         "text": signing_source("micropython")},
    ]


@register.inclusion_tag("devices/_snippets.html")
def connection_snippets(params):
    return {
        "snippets": build_snippets(params) + device_signing_snippets(),
        "tls": params["securemode"] == 2,
    }
