"""Numbers and layouts of Xen's public headers, with no behaviour.

``errno`` (Xen's error numbers), ``xen`` (hypercall numbers, domids, VIRQs, the shared_info layout), ``evtchn``
(EVTCHNOP_* argument structs and FIFO constants), ``hvm`` (HVMOP_*), ``domctl`` (create-domain flags) and
``features`` (the ABI feature registry). Source: ``xen/include/public/`` as summarised in ``spec/evtchn.md`` §1.
"""
