"""molecule/tls: a certificate from pebble over HTTP-01, served by nginx,
renewed by certbot's timer service without restarting nginx."""

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from testlib import (
    assert_check_mode_changes_nothing,
    http_get,
    playbook,
    recap,
    ssh_host,
)

testinfra_hosts = ["asgi-tls-app"]

NAMES = ["hello.tls.test", "www.hello.tls.test"]
ROOT_CA = "/tmp/pebble-root.pem"
CONVERGE = Path(__file__).resolve().parents[2] / "resources" / "converge.yml"


@pytest.fixture(scope="module")
def acme():
    return ssh_host("asgi-tls-acme")


@pytest.fixture(scope="module")
def root_ca(host, acme):
    """pebble's root CA (new at every pebble start), copied to the app host."""
    pem = acme.check_output("curl -fsS --cacert /etc/pebble/ca.pem https://localhost:15000/roots/0")
    host.run(f"printf '%s\\n' {shlex.quote(pem)} > {ROOT_CA}")
    return ROOT_CA


def served_certificate(host, name=NAMES[0]):
    """The leaf certificate nginx serves for `name`, as openssl text."""
    return host.check_output(
        f"openssl s_client -connect 127.0.0.1:443 -servername {name} </dev/null 2>/dev/null"
        " | openssl x509 -noout -serial -ext subjectAltName -issuer"
    )


def nginx_master(host):
    return int(host.check_output("cat /run/nginx.pid"))


def test_chain_is_issued_by_pebble_and_names_match(host, root_ca):
    result = host.run(
        f"openssl s_client -connect 127.0.0.1:443 -servername {NAMES[0]} -CAfile {root_ca}"
        f" -verify_return_error -verify_hostname {NAMES[0]} </dev/null"
    )
    assert "Verify return code: 0 (ok)" in result.stdout, result.stdout[-2000:] + result.stderr
    text = served_certificate(host)
    for name in NAMES:
        assert f"DNS:{name}" in text
    assert "Pebble" in text


def test_https_answers_with_the_app(host, root_ca):
    out = host.check_output(
        f"curl -fsS --cacert {root_ca} --resolve {NAMES[0]}:443:127.0.0.1 https://{NAMES[0]}/request"
    )
    answer = json.loads(out)
    assert answer["scheme"] == "https"
    assert answer["host"] == NAMES[0]


def test_http_redirects_to_https_except_acme_challenges(host):
    answer = http_get(host, "/some/path?x=1", vhost=NAMES[1])
    assert answer["status"] == 301
    assert answer["headers"]["location"] == f"https://{NAMES[1]}/some/path?x=1"
    challenge = http_get(host, "/.well-known/acme-challenge/missing-token", vhost=NAMES[0])
    assert challenge["status"] == 404


def test_hsts_and_http2(host, root_ca):
    out = host.check_output(
        f"curl -sS -o /dev/null -D - --http2 -w 'version=%{{http_version}}' --cacert {root_ca}"
        f" --resolve {NAMES[0]}:443:127.0.0.1 https://{NAMES[0]}/"
    )
    assert re.search(r"(?im)^strict-transport-security: max-age=63072000\s*$", out), out
    assert "version=2" in out


def test_testssl_offers_only_tls12_and_13_with_no_high_findings(host, acme, root_ca):
    address = host.interface("eth0").addresses[0]
    pem = host.file(root_ca).content_string
    acme.run(f"printf '%s' {shlex.quote(pem)} > /tmp/pebble-root.pem")
    acme.run("rm -f /tmp/testssl.json")
    # Every check of testssl's default run but the client simulation
    # (which clients would negotiate what: informational, and a third of
    # the run's time).
    acme.run(
        "testssl --quiet --color 0 --warnings off --add-ca /tmp/pebble-root.pem --jsonfile /tmp/testssl.json"
        f" --protocols --std --fs --server-preference --server-defaults --headers --vulnerable --ip {address} https://{NAMES[0]}/"
    )
    findings = json.loads(acme.file("/tmp/testssl.json").content_string)
    offered = {f["id"]: f["finding"] for f in findings if f["id"] in {"SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3"}}
    for proto in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert offered[proto].startswith("not offered"), offered
    for proto in ("TLS1_2", "TLS1_3"):
        assert offered[proto].startswith("offered"), offered
    # pebble's certificates carry no CRL or OCSP address (Let's Encrypt's
    # carry a CRL address): a property of the test CA, not of nginx.
    test_ca_artefacts = {"cert_revocation"}
    severe = [
        (f["id"], f["severity"], f["finding"])
        for f in findings
        if f.get("severity") in ("HIGH", "CRITICAL") and f["id"] not in test_ca_artefacts
    ]
    assert severe == [], severe


def test_renewal_serves_a_new_serial_without_restarting_nginx(host, root_ca):
    before = served_certificate(host)
    master = nginx_master(host)
    # The renewal service the timer starts carries the ACME server's CA.
    environment = host.check_output("systemctl show -p Environment --value certbot.service")
    assert "REQUESTS_CA_BUNDLE=/etc/letsencrypt/acme-server-ca.pem" in environment
    assert host.service("certbot.timer").is_enabled and host.service("certbot.timer").is_running
    # What the timer runs, forced (the certificate is not yet due) and
    # without its random delay of up to 8 minutes; it runs the deploy hook.
    result = host.run(f"{environment} certbot renew --force-renewal --no-random-sleep-on-renew --non-interactive")
    assert result.rc == 0, result.stdout + result.stderr
    after = served_certificate(host)
    serial = re.compile(r"serial=(\w+)")
    assert serial.search(before).group(1) != serial.search(after).group(1)
    assert nginx_master(host) == master


def test_check_mode_on_converged_host_changes_nothing(host):
    assert_check_mode_changes_nothing()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"certbot_email": ""}, "certbot_email must be a mail address"),
        ({"certbot_agree_tos": False}, "certbot_agree_tos must be true"),
        ({"nginx_server_names": []}, "nginx_server_names must name at least one host"),
        ({"nginx_server_names": ["localhost"]}, "certbot_domains holds names no ACME server will certify"),
    ],
)
def test_bad_tls_input_fails_before_any_change(host, extra, message):
    run = playbook(CONVERGE, "-e", json.dumps(extra))
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert message in output, output[-3000:]
    assert "PLAY [Provision the app servers]" not in output


def test_refusing_acme_server_fails_clearly_and_nginx_keeps_serving(host, root_ca):
    before = served_certificate(host)
    master = nginx_master(host)
    run = playbook(
        CONVERGE,
        "-e",
        json.dumps({"nginx_server_names": [*NAMES, "api.hello.tls.test"], "certbot_acme_directory": "https://asgi-tls-acme:14999/dir"}),
    )
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert "No certificate for hello.tls.test, www.hello.tls.test, api.hello.tls.test" in output, output[-3000:]
    assert "nginx keeps serving the previous certificate" in output
    assert served_certificate(host) == before
    assert nginx_master(host) == master
    assert http_get(host, "/", vhost=NAMES[0])["status"] == 301


def test_adding_a_name_expands_the_certificate(host, root_ca):
    names = [*NAMES, "api.hello.tls.test"]
    run = playbook(CONVERGE, "-e", json.dumps({"nginx_server_names": names}))
    assert run.returncode == 0, run.stdout[-3000:]
    text = served_certificate(host, "api.hello.tls.test")
    for name in names:
        assert f"DNS:{name}" in text
    again = playbook(CONVERGE, "-e", json.dumps({"nginx_server_names": names}))
    assert recap(again.stdout).get("changed") == 0, again.stdout[-3000:]


def test_name_pointing_elsewhere_fails_clearly(host, acme, root_ca):
    # The mock DNS sends this one name to pebble's own host, where nothing
    # answers on port 80: the HTTP-01 check cannot reach this app host.
    acme.check_output(
        "curl -fsS -X POST -d '{\"host\": \"elsewhere.hello.tls.test\", \"addresses\": [\"127.0.0.1\"]}'"
        " http://127.0.0.1:8055/add-a"
    )
    before = served_certificate(host)
    run = playbook(CONVERGE, "-e", json.dumps({"nginx_server_names": [*NAMES, "elsewhere.hello.tls.test"]}))
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert "No certificate for" in output and "elsewhere.hello.tls.test" in output, output[-3000:]
    assert served_certificate(host) == before


def test_selfsigned_mode_and_hsts_options(host):
    run = playbook(
        CONVERGE,
        "-e",
        json.dumps({"nginx_tls_mode": "selfsigned", "nginx_hsts_include_subdomains": True, "nginx_hsts_preload": True}),
    )
    assert run.returncode == 0, run.stdout[-3000:]
    text = served_certificate(host)
    assert f"DNS:{NAMES[0]}" in text and f"DNS:{NAMES[1]}" in text
    # Self-signed: issued by its own name (OpenSSL 3.0 prints "issuer=CN = x", 3.5 "issuer=CN=x").
    assert re.search(rf"(?im)^issuer\s*=\s*CN\s*=\s*{re.escape(NAMES[0])}$", text), text
    headers = host.check_output(f"curl -sk -o /dev/null -D - --resolve {NAMES[0]}:443:127.0.0.1 https://{NAMES[0]}/")
    assert re.search(r"(?im)^strict-transport-security: max-age=63072000; includeSubDomains; preload\s*$", headers), headers


def test_provided_mode(host, tmp_path):
    key, cert = tmp_path / "provided.key", tmp_path / "provided.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "30", "-subj", "/CN=provided.example", "-addext", f"subjectAltName=DNS:{NAMES[0]},DNS:{NAMES[1]}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    serial = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-serial"], check=True, capture_output=True, text=True)
    run = playbook(CONVERGE, "-e", json.dumps(
        {"nginx_tls_mode": "provided", "nginx_tls_certificate": str(cert), "nginx_tls_certificate_key": str(key)}))
    assert run.returncode == 0, run.stdout[-3000:]
    assert "BEGIN PRIVATE KEY" not in run.stdout + run.stderr
    assert serial.stdout.strip() in served_certificate(host)
    assert host.file("/etc/nginx/tls/hello/provided.key").mode == 0o600

    # A key that is not the certificate's: nginx -t refuses it, the
    # previous pair is back and nginx, not reloaded, serves it.
    other = tmp_path / "other.key"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-out", str(other)],
                   check=True, capture_output=True)
    pair = "sha256sum /etc/nginx/tls/hello/provided.crt /etc/nginx/tls/hello/provided.key"
    before, master = host.check_output(pair), nginx_master(host)
    run = playbook(CONVERGE, "-e", json.dumps(
        {"nginx_tls_mode": "provided", "nginx_tls_certificate": str(cert), "nginx_tls_certificate_key": str(other)}))
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert "nginx -t refused the new configuration" in output and "key values mismatch" in output, output[-3000:]
    assert "BEGIN PRIVATE KEY" not in output
    assert host.check_output(pair) == before
    assert host.check_output("find /etc/nginx -name '.*.asgi-*'") == ""
    assert nginx_master(host) == master and serial.stdout.strip() in served_certificate(host)


def test_the_renewal_hook_never_reloads_a_configuration_nginx_refuses(host):
    """The hook certbot runs after a renewal goes through asgi-nginx-apply:
    with a broken file left in conf.d by hand, it fails with nginx's words
    and nginx, not reloaded, keeps serving."""
    hook = "/etc/letsencrypt/renewal-hooks/deploy/50-asgi-nginx-reload"
    master = nginx_master(host)
    host.check_output("echo 'no_such_directive on;' > /etc/nginx/conf.d/zz-by-hand.conf")
    try:
        refused = host.run(hook)
    finally:
        host.check_output("rm -f /etc/nginx/conf.d/zz-by-hand.conf")
    assert refused.rc == 3 and 'unknown directive "no_such_directive"' in refused.stderr, refused.stderr
    assert nginx_master(host) == master
    assert http_get(host, "/", vhost=NAMES[0])["status"] == 301
    accepted = host.run(hook)
    assert accepted.rc == 0 and accepted.stdout.strip() == "changed", accepted.stdout + accepted.stderr
