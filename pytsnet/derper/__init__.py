"""A standalone DERP relay (``python -m pytsnet derper``): localnet's relay and STUN server on their
own listener, open to every client or admitting only those an admission controller approves."""
