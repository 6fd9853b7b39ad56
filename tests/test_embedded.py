"""What the embedded broker (broker/embedded.py) does for speed, tested without a broker: its
light amqtt session (PortalSession: the same states and transitions as amqtt's own Session,
without a transitions.Machine per connection) and its garbage collector settings (tune_gc).
The broker's rules themselves are tested at a real broker in tests/test_broker.py."""

import gc

import pytest
import transitions
from amqtt.session import Session

from broker import embedded
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


def test_the_broker_freezes_its_start_up_objects_and_collects_the_young_less_often():
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    try:
        embedded.tune_gc()
        assert gc.get_threshold() == embedded.GC_THRESHOLDS
        assert embedded.GC_THRESHOLDS[0] > before[0]
        assert gc.get_freeze_count() > frozen
        assert gc.isenabled()  # tuned, never off: a cycle is still collected
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
