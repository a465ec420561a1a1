"""External oracles the tests compare xenabi against (real Xen code, run, never copied)."""
