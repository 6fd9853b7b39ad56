"""A device's topic space (spec §4, decision): ``/sys/{productId}/{deviceId}/#`` and
``/{productId}/{deviceId}/#``. One home for the rule: the embedded broker and the EMQX hooks judge
with it (through ``broker.verifier``), and so does the portal when a person sends a message to a
device. Pure Python, no Django."""

from __future__ import annotations

MAX_TOPIC_BYTES = 65535  # MQTT 3.1.1 §1.5.3: a UTF-8 string of at most 65535 bytes


def topic_spaces(product_id: str, device_id: str) -> tuple[str, str]:
    """The two topic prefixes a device owns (spec §4, decision)."""
    return (f"/sys/{product_id}/{device_id}", f"/{product_id}/{device_id}")


def topic_allowed(product_id: str, device_id: str, topic: str) -> bool:
    """Whether a topic (publish) or topic filter (subscribe) lies inside the device's space.

    Inside means: the prefix itself, or anything below it. Wildcards are allowed only below
    the prefix, so ``/pk/dev/#`` is inside but ``/pk/+/x`` and ``#`` are not.
    """
    if not isinstance(topic, str) or topic == "":
        return False
    for prefix in topic_spaces(product_id, device_id):
        if topic == prefix or topic.startswith(prefix + "/"):
            return True
    return False


def topic_matches(topic: str, topic_filter: str) -> bool:
    """Whether a topic name matches a subscription's filter (MQTT 3.1.1 §4.7)."""
    if topic_filter == topic:
        return True
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return index == len(filter_levels) - 1
        if index >= len(topic_levels) or level not in ("+", topic_levels[index]):
            return False
    return len(filter_levels) == len(topic_levels)


def send_topic_problem(product_id: str, device_id: str, topic) -> str | None:
    """Why the portal may not send to ``topic`` for this device, as a code (``required``,
    ``wildcard``, ``too_long``, ``outside``), or None. A topic name has no wildcards."""
    if not isinstance(topic, str) or not topic:
        return "required"
    if "+" in topic or "#" in topic or "\x00" in topic:
        return "wildcard"
    if len(topic.encode("utf-8", "surrogatepass")) > MAX_TOPIC_BYTES:
        return "too_long"
    if not topic_allowed(product_id, device_id, topic):
        return "outside"
    return None
