"""Sans-IO TCP (RFC 9293): segment codec, one state machine per connection, TIME_WAIT table.

How a stack drives a ``TcpConnection`` (no clock reads, no I/O here):

- feed every segment for the 4-tuple to ``on_segment(seg, now)``; feed app calls (``send``,
  ``recv``, ``shutdown_write``, ``close``, ``abort``) as they happen;
- after any of those, and whenever ``now >= next_deadline()``, call ``poll(now)`` and transmit
  every returned segment (``emit_segment(seg, local_ip, remote_ip)``);
- ``next_deadline()`` returning a time <= now means output is ready; ``None`` means idle;
- drop the connection once ``is_closed``; a ``TIME_WAIT`` connection may instead be moved to a
  ``TimeWaitTable`` via ``time_wait_state()`` to free its buffers early.

Modules: ``segment`` (codec), ``connection`` (state machine, ``TcpConfig``), ``seq``, ``rto``
(RFC 6298), ``congestion`` (NewReno), ``reassembly`` (out-of-order queue, SACK blocks),
``sendbuf`` (send buffer, SACK scoreboard), ``timewait``, ``errors``.
"""
