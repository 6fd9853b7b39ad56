"""The embedded broker's light amqtt session (broker.embedded.PortalSession): the same states
and transitions as amqtt's own Session, without building a transitions.Machine per connection."""

import pytest
import transitions
from amqtt.session import Session

from broker.embedded import PortalSession

# Every sequence of triggers of up to four steps, from a new session.
TRIGGERS = ["connect", "disconnect"]
SEQUENCES = [[]]
for _ in range(4):
    SEQUENCES += [seq + [t] for seq in SEQUENCES if len(seq) == _ for t in TRIGGERS]


def _walk(session, triggers):
    """The states after each trigger, "error" where amqtt's machine refuses the trigger."""
    seen = [session.transitions.state]
    for trigger in triggers:
        try:
            getattr(session.transitions, trigger)()
        except transitions.MachineError:
            seen.append("error")
            continue
        seen.append((session.transitions.state, session.transitions.is_connected(),
                     session.last_connect_time is not None,
                     session.last_disconnect_time is not None))
    return seen


@pytest.mark.parametrize("triggers", SEQUENCES, ids=lambda s: "-".join(s) or "new")
def test_a_portal_session_moves_through_the_states_of_amqtts_own_session(triggers):
    assert _walk(PortalSession(), triggers) == _walk(Session(), triggers)


def test_a_portal_session_builds_no_state_machine(monkeypatch):
    built = []
    original = transitions.Machine.__init__

    def counting(self, *args, **kwargs):
        built.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(transitions.Machine, "__init__", counting)
    Session()
    assert len(built) == 1  # amqtt's own builds one per session
    PortalSession()
    assert len(built) == 1
