"""Guest-side code: what a Linux-like kernel does with the event channel ABIs, through guest memory and hypercalls.

``evtchn_2l`` and ``evtchn_fifo`` are the reference consumers (``spec/evtchn.md`` §4.5 and §5.7); the guest kernel
models build on them.
"""
