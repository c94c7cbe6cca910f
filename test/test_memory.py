"""Large frame buffers stay in the heap: glibc's mmap and trim thresholds are raised for the node."""

import subprocess
import sys

import pytest

PROBE = '''
import ctypes, resource, sys
import numpy as np
from seg_node.runtime.memory import keep_large_buffers
applied = keep_large_buffers() if sys.argv[1] == 'tuned' else False
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):  # warm up: the sizes a 1080p node allocates and frees, two at a time
    a, b = np.ones(6_220_800, np.uint8), np.ones(6_220_800, np.uint8)
    del a, b
before = faults()
for _ in range(20):
    a, b = np.ones(6_220_800, np.uint8), np.ones(6_220_800, np.uint8)
    del a, b
print(applied, faults() - before)
'''


def faults_per_buffer(mode: str) -> tuple[bool, float]:
    done = subprocess.run([sys.executable, '-c', PROBE, mode], capture_output=True, text=True, check=True)
    applied, faults = done.stdout.split()
    return applied == 'True', int(faults) / 40


def test_tuned_buffers_are_reused_without_page_faults():
    applied, tuned = faults_per_buffer('tuned')
    if not applied:
        pytest.skip('not glibc: mallopt is not available')
    _, default = faults_per_buffer('default')
    # A fresh 6 MB buffer from the system costs ~1,500 faults (4 KB pages); glibc's defaults hand back
    # about a third of them here (~480 faults per buffer on average); a reused one costs almost none.
    assert default > 200, f'glibc defaults no longer return these buffers ({default:.0f} faults each)'
    assert tuned < 20, f'{tuned:.0f} page faults per 6 MB buffer with the thresholds raised'


def test_the_switch_turns_it_off(monkeypatch):
    from seg_node.runtime.memory import ENVIRONMENT_SWITCH, keep_large_buffers
    monkeypatch.setenv(ENVIRONMENT_SWITCH, '0')
    assert keep_large_buffers() is False
