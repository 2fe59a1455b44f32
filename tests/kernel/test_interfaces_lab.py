"""The kernel's own process-event interfaces (cnproc, taskstats, acct) attached for real
on each lab kernel, as tests/test_native_interfaces.py does natively on the host's: the
same child, the same records. No compile: a second or two each under TCG."""
import pytest

from test_native_interfaces import check_backend_for_real

pytestmark = pytest.mark.kernel


@pytest.mark.parametrize("name", ["cnproc", "taskstats", "acct"])
def test_backend_for_real_in_the_lab(name):
    check_backend_for_real(name)
