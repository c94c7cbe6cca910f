"""The package layers and the one rule between them, checked on the source (see README, "Architecture").

model/, runtime/, msg/ and synthetic/ import neither ROS nor torch; ros/ (and the bag player) are the
only ROS importers, training/ the only torch importer; subpackages depend downwards only, and no
two modules import each other, directly or round a longer cycle.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'seg_node'
ROS = {'rclpy', 'rcl_interfaces', 'sensor_msgs', 'std_msgs', 'diagnostic_msgs', 'vision_msgs',
       'rosgraph_msgs', 'lifecycle_msgs', 'builtin_interfaces', 'nav_msgs', 'geometry_msgs', 'tf2_ros'}
TORCH = {'torch', 'torchvision'}
ROS_FREE = ('model', 'runtime', 'msg', 'synthetic', 'ground', 'viewer')
# What each layer may import from the package; anything else is an upward (or sideways) dependency.
ALLOWED = {
    'errors': set(),
    'privacy': set(),
    'model': {'errors', 'privacy'},
    'msg': {'errors', 'privacy', 'model'},
    'runtime': {'errors', 'privacy', 'model'},
    'synthetic': {'errors', 'privacy', 'model'},
    # Ground grid: masks -> a metric grid on the flat ground (numpy/OpenCV only).
    'ground': {'errors', 'privacy', 'model'},
    # The Foxglove live view: ROS-free, fed by the node (foxglove-sdk is an optional extra).
    'viewer': {'errors', 'privacy', 'model', 'msg', 'runtime'},
    'ros': {'errors', 'privacy', 'model', 'msg', 'runtime', 'ground', 'viewer'},
    'bag': {'errors', 'privacy', 'model', 'msg', 'runtime', 'synthetic', 'ros', 'ground'},
    'training': {'errors', 'privacy', 'model', 'msg', 'runtime', 'synthetic'},
    # Fleet labelling on Ray: the bag tools on many machines; Ray workers never import ROS.
    'fleet': {'errors', 'privacy', 'model', 'msg', 'runtime', 'bag'},
}
# The one edge that points up: ``seg_bag fleet`` (in the seg_bag command line) hands its arguments to
# the fleet layer, importing it only when that command runs, so Ray stays an optional extra.
COMMAND_DISPATCH = {('seg_node.bag.cli', 'seg_node.fleet.cli')}
ROS_IMPORTERS = ('seg_node.ros.', 'seg_node.bag.play')


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    found = {}
    for path in sorted(PACKAGE.rglob('*.py')):
        parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
        name = '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)
        found[name] = path
    return found


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports anywhere in its body (function-level and TYPE_CHECKING included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f'{node.module}.{alias.name}' for alias in node.names)
    return names


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules that module ``name`` (at ``path``) imports, relative imports resolved.

    ``from X import Y`` is an edge to X.Y when that is a module, else to X (a package's
    ``__init__`` when X is a package), so ``from seg_node.fleet import require_ray`` is an edge too.
    """
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parent = package.split('.')[:len(package.split('.')) - (node.level - 1)]
                base = '.'.join([*parent, base] if base else parent)
            found.update(f'{base}.{alias.name}' if f'{base}.{alias.name}' in known else base for alias in node.names)
    return found & known


def package_edges(sources: dict[str, Path] | None = None) -> dict[str, set[str]]:
    """module -> the package modules it imports (``sources``: name -> file, default the package's modules)."""
    known = modules() if sources is None else sources
    return {name: imported_modules(name, path, set(known)) - {name} for name, path in known.items()}


def layer(module: str) -> str:
    """``seg_node.runtime.engine`` -> ``runtime``."""
    return module.split('.')[1] if module.count('.') else ''


def test_ros_is_imported_only_by_the_ros_layer_and_the_bag_player():
    offenders = sorted(f'{name} imports {i}' for name, path in modules().items() for i in imports(path)
                       if i.split('.')[0] in ROS and not name.startswith(ROS_IMPORTERS))
    assert offenders == []


def test_torch_is_imported_only_by_training():
    offenders = sorted(f'{name} imports {i}' for name, path in modules().items() for i in imports(path)
                       if i.split('.')[0] in TORCH and not name.startswith('seg_node.training'))
    assert offenders == []


def upward_edges(edges: dict[str, set[str]]) -> list[str]:
    """'a imports b' for every edge that ALLOWED (and the one command dispatch) does not permit."""
    return sorted(f'{src} imports {dst}' for src, targets in edges.items() for dst in targets
                  if layer(src) and layer(dst) != layer(src) and layer(dst) not in ALLOWED[layer(src)]
                  and (src, dst) not in COMMAND_DISPATCH)


def test_layers_depend_downwards_only():
    assert upward_edges(package_edges()) == []


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every group of modules that import each other round a cycle (Tarjan's strongly connected components)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while (member := stack.pop()) != node:
                on_stack.discard(member)
                component.append(member)
            on_stack.discard(node)
            if component:
                cycles.append(sorted([node, *component]))

    for node in edges:
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycles():
    assert find_cycles(package_edges()) == []


def test_the_checks_see_a_violation():
    # Negative controls: each check reports a violation when there is one.
    assert find_cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c']]
    assert 'rclpy.node' in imports(PACKAGE / 'ros' / 'node_base.py')
    assert 'seg_node.runtime.engine' in package_edges()['seg_node.runtime.loader']
    assert 'seg_node.privacy' in package_edges()['seg_node']  # a package's __init__ imports too
    assert layer('seg_node.runtime.engine') == 'runtime' and 'ros' not in ALLOWED['runtime']
    code = f'BLOCKED = {sorted(ROS)!r}\nMODULES = ["seg_node.ros.node_base"]\n' + BLOCKER
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=False)
    assert done.returncode != 0 and 'is blocked' in done.stderr


def test_imports_of_a_package_and_relative_imports_are_edges(tmp_path):
    # Negative controls for both forms: a runtime module importing upwards from the ros package's
    # __init__ (absolute) and from a ros module and the ros package (relative).
    files = {
        'seg_node/__init__.py': '', 'seg_node/ros/__init__.py': 'NODE = 1\n', 'seg_node/ros/node.py': '',
        'seg_node/runtime/__init__.py': 'from . import engine\n',
        'seg_node/runtime/engine.py': 'from seg_node.ros import NODE\n',
        'seg_node/runtime/loader.py': 'from .. import ros\nfrom ..ros.node import Node\nfrom .engine import run\n',
    }
    sources = {}
    for relative, text in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        parts = Path(relative).with_suffix('').parts
        sources['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = path
    edges = package_edges(sources)
    assert edges['seg_node.runtime'] == {'seg_node.runtime.engine'}
    assert edges['seg_node.runtime.engine'] == {'seg_node.ros'}
    assert edges['seg_node.runtime.loader'] == {'seg_node.ros', 'seg_node.ros.node', 'seg_node.runtime.engine'}
    assert upward_edges(edges) == ['seg_node.runtime.engine imports seg_node.ros',
                                   'seg_node.runtime.loader imports seg_node.ros',
                                   'seg_node.runtime.loader imports seg_node.ros.node']


BLOCKER = '''
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ImportError(f'{name} is blocked: this layer must not import it')
sys.meta_path.insert(0, Block())
import importlib
for name in MODULES:
    importlib.import_module(name)
print('imported', len(MODULES))
'''


@pytest.mark.parametrize('subpackage', ROS_FREE)
def test_ros_free_layers_import_with_ros_and_torch_blocked(subpackage):
    names = [n for n in modules() if n.startswith(f'seg_node.{subpackage}')]
    blocked = sorted(ROS | TORCH)
    code = f'BLOCKED = {blocked!r}\nMODULES = {names!r}\n' + BLOCKER
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert f'imported {len(names)}' in done.stdout
