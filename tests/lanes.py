"""The two lanes of the suite: which tests need the ``broker`` or ``browser`` mark, judged from
the fixtures they use (``tests/conftest.py`` applies the marks and guards subprocesses)."""

from pathlib import Path

# A test whose fixtures (with what they use) include one of these is in that lane.
LANE_FIXTURES = {
    "broker": {"_mqtt_broker_process", "start_worker"},
    "browser": {"browser"},
}
# A live server belongs to a lane too: the browser's if the test is a browser test, else broker.
SERVER_FIXTURES = {"live_server"}
# Programs that only a broker-marked test may start (they listen or keep running).
SERVER_PROGRAMS = {"runbroker", "db_worker", "runworker", "rqworker", "runportal", "runserver", "gunicorn",
                   "redis-server", "postgres", "pg_ctl", "chromium"}


def server_program(args):
    """The server program a command line starts, if any (``manage.py runbroker`` -> runbroker)."""
    words = args.split() if isinstance(args, str) else [str(word) for word in args]
    return next((Path(w).name for w in words if Path(w).name in SERVER_PROGRAMS), None)


def lanes_of(item):
    """The lane marks a collected test needs, from the fixtures it uses."""
    names = set(getattr(item, "fixturenames", ()))
    needed = {lane for lane, fixtures in LANE_FIXTURES.items() if names & fixtures}
    if names & SERVER_FIXTURES and not needed:
        needed.add("broker")
    return needed
