# The suite's real AWS (moto's server over HTTP, or the target SCHIZODOT_TEST_AWS names).
from tests.conftest import _dummy_aws_credentials, aws_server  # noqa: F401
