"""The packages' docstring examples, run against the installed modules (debtor_segments.*).

pytest's own doctest collection imports a file by its path, which would load ``streams/*.py``
a second time under the name ``streams.*`` beside ``debtor_segments.streams.*``; importing by
the installed name keeps one copy of every class.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import debtor_segments.agents
import debtor_segments.schemas
import debtor_segments.streams

#: Entry points run the program when imported.
_SKIP = {"debtor_segments.agents.__main__"}


def _modules() -> list[str]:
    names = []
    for package in (debtor_segments.streams, debtor_segments.schemas, debtor_segments.agents):
        names.append(package.__name__)
        names += [info.name for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
    return sorted(set(names) - _SKIP)


def test_every_package_module_is_collected() -> None:
    # A module that fails to import, or a package that lost its modules, shows here too.
    names = _modules()
    assert "debtor_segments.streams.engine" in names and "debtor_segments.agents.worker" in names
    assert len(names) > 60


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    for test in finder.find(module, name):
        runner.run(test, out=report.append)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, "".join(report)
