"""Go's LocalAPI for a pytsnet node: the JSON shapes (``types``), the route table (``server``), its
HTTP face (``http``), the unix socket (``unix``) and the client (``client``). See docs/architecture.md."""
