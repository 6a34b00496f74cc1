"""pytest glue for the integration files (see tests/support/harness.py).

- Collects every function marked by harness.test (`@test`, `@test(timeout=N)`), whatever
  its name, in file order, besides pytest's usual test_* functions.
- Per-test timeout from the `timeout` marker (default harness.DEFAULT_TIMEOUT seconds),
  by SIGALRM, unless the pytest-timeout plugin is installed and does it.
- Scopes: what a file starts while it is imported or in its module fixtures belongs to
  the file and is stopped after its last test; what a test starts is stopped when the
  test ends, passed or failed. A sanitizer report in the stderr of a gateway or demo shop
  fails the test (or the file's last test) that was running.
"""

import signal

import pytest

import harness

_file_scopes = {}  # module node id -> harness.Scope


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): fail the test after that long")


def pytest_pycollect_makeitem(collector, name, obj):
    # test_* names are pytest's own to collect; the marker brings in every other name.
    if callable(obj) and getattr(obj, "floodgate_test", False) and not name.startswith("test_"):
        return pytest.Function.from_parent(collector, name=name)
    return None


def pytest_collectstart(collector):
    if isinstance(collector, pytest.Module):
        _file_scopes[collector.nodeid] = harness.open_scope(harness.Scope(collector.nodeid))


def pytest_collectreport(report):
    scope = _file_scopes.get(report.nodeid)
    if scope is not None and harness._scopes[-1] is scope:
        harness.detach_scope(scope)


def _fail_on_reports(reports, when):
    if reports:
        pytest.fail(f"sanitizer report {when}:\n" + "\n\n".join(reports), pytrace=False)


@pytest.fixture(scope="module", autouse=True)
def _file_scope(request):
    scope = harness.open_scope(_file_scopes.pop(request.node.nodeid, None) or
                               harness.Scope(request.node.nodeid))
    yield
    _fail_on_reports(harness.close_scope(scope), "from a process this file started")


@pytest.fixture(autouse=True)
def _test_scope(request):
    scope = harness.open_scope(harness.Scope(request.node.nodeid))
    yield
    _fail_on_reports(harness.close_scope(scope), "from a process this test started")


def _timeout_of(item):
    marker = item.get_closest_marker("timeout")
    if marker and marker.args:
        return marker.args[0]
    if marker and "timeout" in marker.kwargs:
        return marker.kwargs["timeout"]
    return harness.DEFAULT_TIMEOUT


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    if item.config.pluginmanager.hasplugin("timeout"):
        yield
        return
    seconds = _timeout_of(item)

    def expired(signum, frame):
        raise harness.TestTimeout(f"test timed out after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if outcome.get_result().failed:
        harness.any_failed = True


def pytest_sessionfinish(session, exitstatus):
    # A file whose tests never ran (all deselected by -k, or the run stopped at a
    # collection error) never reopened its scope: stop what its import started.
    reports = []
    for scope in _file_scopes.values():
        reports += scope.close()
    _file_scopes.clear()
    reports += harness.finish(keep_tmp=harness.any_failed or exitstatus != 0)
    if reports:
        print("\nsanitizer report from a process started outside any file:\n"
              + "\n\n".join(reports), flush=True)
        session.exitstatus = 1
