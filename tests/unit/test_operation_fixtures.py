"""pyinfra-style fixture tests: facts and arguments in, exact commands out, one JSON file per case."""

from pathlib import Path

from pyinfra_testing.operations import make_operation_tests

FIXTURES = Path(__file__).parent.parent / "fixtures" / "operations"

for _folder in sorted(FIXTURES.iterdir()):
    _name = "Test_" + _folder.name.replace(".", "_")
    globals()[_name] = make_operation_tests("halofleet.operations", _folder.name, _folder)
