"""Go's ServeConfig JSON and Serve's sans-IO decisions (wire/serve.py), against Go's own cases."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytsnet.wire.serve import (
    HTTPHandler,
    ServeConfig,
    ServeConfigError,
    TCPPortHandler,
    WebServerConfig,
    etag,
    expand_proxy_arg,
    expand_redirect,
    match_web,
    parse_redirect,
    parse_serve_config,
    path_target,
    to_go_json,
    validate,
    validate_update,
    web_key,
)

GO_JSON = (b'{"TCP":{"443":{"HTTPS":true},"5432":{"TCPForward":"127.0.0.1:5432","TerminateTLS":"n.ts.net"}},'
           b'"Web":{"n.ts.net:443":{"Handlers":{"/":{"Proxy":"http://127.0.0.1:3000"},"/t":{"Text":"hi"}}}},'
           b'"AllowFunnel":{"n.ts.net:443":true}}')


def test_go_json_reads_and_writes_back_byte_for_byte() -> None:
    cfg = parse_serve_config(GO_JSON)
    assert cfg is not None
    assert cfg.TCP[443].HTTPS and cfg.TCP[5432].TerminateTLS == "n.ts.net"
    assert cfg.Web["n.ts.net:443"].Handlers["/t"].Text == "hi"
    assert to_go_json(cfg) == GO_JSON
    assert etag(cfg) == hashlib.sha256(GO_JSON).hexdigest()
    assert etag(None) == hashlib.sha256(b"null").hexdigest()
    assert parse_serve_config(b"null") is None and parse_serve_config(b"") is None


def test_map_keys_sorted_as_text_like_go() -> None:
    cfg = ServeConfig(TCP={80: TCPPortHandler(HTTP=True), 10000: TCPPortHandler(HTTP=True),
                           443: TCPPortHandler(HTTPS=True)})
    assert to_go_json(cfg).startswith(b'{"TCP":{"10000":')


@pytest.mark.parametrize("bad", [
    b'{"TCP":{"0":{"HTTP":true}}}',                      # port out of range
    b'{"TCP":{"70000":{"HTTP":true}}}',
    b'{"TCP":{"80":{"HTTP":"yes"}}}',                    # strict types
    b'{"TCP":{"80":{"HTTP":true,"Bogus":1}}}',           # unknown field
    b'{"Web":',                                          # not JSON
    b'[1,2]',
])
def test_bad_json_is_a_typed_error(bad: bytes) -> None:
    with pytest.raises(ServeConfigError):
        parse_serve_config(bad)


@pytest.mark.parametrize("cfg", [
    ServeConfig(TCP={80: TCPPortHandler()}),                                         # nothing to do
    ServeConfig(TCP={80: TCPPortHandler(HTTP=True, TCPForward="127.0.0.1:1")}),        # two modes
    ServeConfig(TCP={80: TCPPortHandler(HTTP=True, TerminateTLS="x")}),                # TLS without forward
    ServeConfig(TCP={80: TCPPortHandler(TCPForward="nohostport")}),
    ServeConfig(TCP={80: TCPPortHandler(TCPForward="unix:/run/x.sock")}),
    ServeConfig(TCP={80: TCPPortHandler(TCPForward="127.0.0.1:1", ProxyProtocol=3)}),   # 20h: 1 or 2
    ServeConfig(TCP={80: TCPPortHandler(HTTP=True, ProxyProtocol=1)}),                 # 20h: forwards only
    ServeConfig(Web={"nohostport": WebServerConfig()}),
    ServeConfig(Web={"n:80": WebServerConfig(Handlers={"x": HTTPHandler(Text="a")})}),  # mount not absolute
    ServeConfig(Web={"n:80": WebServerConfig(Handlers={"/a/../b": HTTPHandler(Text="a")})}),
    ServeConfig(Web={"n:80": WebServerConfig(Handlers={"/": HTTPHandler()})}),          # empty handler
    ServeConfig(Web={"n:80": WebServerConfig(Handlers={"/": HTTPHandler(Text="a", Proxy="80")})}),
    ServeConfig(Web={"n:80": WebServerConfig(Handlers={"/": HTTPHandler(Path="rel/dir")})}),
    ServeConfig(Web={"n:80": WebServerConfig(Handlers={"/": HTTPHandler(Proxy="ftp://x")})}),
    ServeConfig(Web={"n:80": WebServerConfig(Handlers={"/": HTTPHandler(Proxy="unix:/x")})}),
    ServeConfig(Web={"n:80": WebServerConfig(Handlers={"/": HTTPHandler(Proxy="h:port")})}),
    ServeConfig(Services={"web": {}}),                                    # 20f: not a svc: name
    ServeConfig(Services={"svc:web": {"Tun": True}}),                     # 20f: no TUN mode here
])
def test_unservable_configs_are_refused(cfg: ServeConfig) -> None:
    with pytest.raises(ServeConfigError):
        validate(cfg)


def test_a_port_keeps_its_serve_type_as_go() -> None:
    old = ServeConfig(TCP={80: TCPPortHandler(HTTP=True)})
    validate_update(old, ServeConfig(TCP={80: TCPPortHandler(HTTP=True),
                                          81: TCPPortHandler(TCPForward="h:1")}))
    with pytest.raises(ServeConfigError, match="already serving 'http'"):
        validate_update(old, ServeConfig(TCP={80: TCPPortHandler(TCPForward="127.0.0.1:1")}))
    validate_update(old, None)  # removing everything is always allowed


def test_expand_proxy_arg_as_go() -> None:
    assert expand_proxy_arg("3030") == ("http://127.0.0.1:3030", False)
    assert expand_proxy_arg("localhost:3030") == ("http://localhost:3030", False)
    assert expand_proxy_arg("http://h:1/p") == ("http://h:1/p", False)
    assert expand_proxy_arg("https+insecure://10.0.0.1:4430") == ("https://10.0.0.1:4430", True)
    assert expand_proxy_arg("") == ("", False)


def _h(text: str) -> HTTPHandler:
    return HTTPHandler(Text=text)


def test_match_web_walks_like_go_get_serve_handler() -> None:
    hs = {"/": _h("root"), "/foo/": _h("foo/"), "/bar": _h("bar"), "/a/b/": _h("ab")}
    got = {p: (m[0].Text, m[1]) if (m := match_web(hs, p)) else None
           for p in ["/", "/foo", "/foo/", "/foo/x/y", "/bar", "/bar/x", "/barx", "/a/b/c", "/a", "*", ""]}
    assert got == {
        "/": ("root", "/"), "/foo": ("foo/", "/foo/"), "/foo/": ("foo/", "/foo/"),
        "/foo/x/y": ("foo/", "/foo/"),
        "/bar": ("bar", "/bar"), "/bar/x": ("bar", "/bar"), "/barx": ("root", "/"), "/a/b/c": ("ab", "/a/b/"),
        "/a": ("root", "/"), "*": None, "": None}
    assert match_web({"/x": _h("x")}, "/y") is None  # no root mount: 404, never a fall-through


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="/.ab*%", max_size=30))
def test_match_web_ends_on_any_path(path: str) -> None:
    match_web({"/a/": _h("a")}, path)


def test_redirect_code_and_expansion_as_go() -> None:
    assert parse_redirect("https://x/") == (302, "https://x/")
    assert parse_redirect("301:https://x/") == (301, "https://x/")
    assert parse_redirect("200:https://x/") == (302, "200:https://x/")  # not a 3xx: the whole string
    assert expand_redirect("https://${HOST}${REQUEST_URI}", "n.ts.net", "/a?b=1") == "https://n.ts.net/a?b=1"


def test_web_key_from_host_or_sni() -> None:
    assert web_key("node", None, "tail1.ts.net", 80) == "node.tail1.ts.net:80"
    assert web_key("node:80", None, "tail1.ts.net", 80) == "node.tail1.ts.net:80"
    assert web_key("node.tail1.ts.net", None, "tail1.ts.net", 80) == "node.tail1.ts.net:80"
    assert web_key("ignored", "node.tail1.ts.net", "tail1.ts.net", 443) == "node.tail1.ts.net:443"


def test_path_target_refuses_traversal() -> None:
    assert path_target("/srv/www", "/", "/a/b.txt") == "/srv/www/a/b.txt"
    assert path_target("/srv/www", "/static/", "/static/x.css") == "/srv/www/x.css"
    assert path_target("/srv/www", "/", "/") == "/srv/www"
    assert path_target("/srv/www", "/", "/a/../../etc/passwd") is None
    assert path_target("/srv/www", "/", "/..") is None
    assert path_target("/srv/www", "/s/", "/s/..%2f") == "/srv/www/..%2f"  # under root (not decoded here)
