"""The allocator setting the train / evaluate / reproduce commands and the benchmark apply."""
import subprocess
import sys

# In a fresh interpreter: the setting is process-wide and must not leak into the test process.
PROBE = """
import resource, torch
from selectivbench.allocator import keep_freed_memory

def faults_of_a_step():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x, y = torch.ones(16 * 2**20), torch.ones(3 * 2**20)  # 64 and 12 MiB, every page written
    del x, y
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = [faults_of_a_step() for _ in range(4)][-1]
applied = keep_freed_memory()
kept = [faults_of_a_step() for _ in range(6)][-1]  # the heap settles after a few steps
print(applied, default, kept)
"""


def test_keep_freed_memory_reuses_freed_pages():
    """glibc's default serves a 64 MiB tensor with a fresh mmap every step (one page fault per
    4 KiB page: 16,384); kept, a step reuses the pages of the step before."""
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split()
    applied, default, kept = out[0] == "True", int(out[1]), int(out[2])
    assert applied
    assert default >= 16384 and kept < 1000, (default, kept)
