# The platform's MQTT signature (MQTT-ACCESS.md sections 2-3) for MicroPython (hmac from
# micropython-lib: `mip.install("hmac")`) and CPython alike.
# content = "clientId" c "deviceId" d "productId" p ["timestamp" t],
# password = lowercase hex of HMAC(deviceSecret, content).
import binascii
import hashlib
import hmac

_HASHES = {"hmacmd5": "md5", "hmacsha1": "sha1", "hmacsha256": "sha256"}


def mqtt_sign(product_id, device_id, device_secret, client_id, securemode=2,
              signmethod="hmacsha256", timestamp=None, exclusive=False):
    """(mqttClientId, mqttUsername, mqttPassword); timestamp in ms since 1970, or None."""
    if signmethod not in _HASHES:
        raise ValueError("signmethod must be hmacmd5, hmacsha1 or hmacsha256")
    if securemode not in (2, 3):
        raise ValueError("securemode must be 2 or 3")
    content = "clientId" + client_id + "deviceId" + device_id + "productId" + product_id
    extensions = "securemode=" + str(securemode) + ",signmethod=" + signmethod
    if timestamp is not None:
        content += "timestamp" + str(timestamp)
        extensions += ",timestamp=" + str(timestamp)
    if exclusive:
        extensions += ",exclusive=true"
    digestmod = getattr(hashlib, _HASHES[signmethod])
    mac = hmac.new(device_secret.encode(), content.encode(), digestmod).digest()
    return (client_id + "|" + extensions + "|", device_id + "&" + product_id,
            binascii.hexlify(mac).decode())
