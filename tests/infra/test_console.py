"""The web console's hosting in infra/template.yaml (Console=true) and
infra/deploy-console, which uploads the page.

The template's wiring is checked on the template itself (and through the
SAM translator cfn-lint runs); the security headers against the exact
policy `convo-local console` prints; the deploy script against moto (S3,
CloudFront, CloudFormation), run as a person runs it.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import stack  # noqa: E402

ROOT = stack.ROOT
TEMPLATE = stack.TEMPLATE
VENV = ROOT / ".venv" / "bin"
BIN = os.environ.get("CONVO_LOCAL_BIN", str(ROOT / "target" / "debug" / "convo-local"))
SCRIPT = ROOT / "infra" / "deploy-console"

CONSOLE_RESOURCES = {
    "ConsoleBucket": ("AWS::S3::Bucket", "CreateConsole"),
    "ConsoleBucketPolicy": ("AWS::S3::BucketPolicy", "CreateConsole"),
    "ConsoleOriginAccessControl": ("AWS::CloudFront::OriginAccessControl", "CreateConsole"),
    "ConsoleHeaders": ("AWS::CloudFront::ResponseHeadersPolicy", "CreateConsole"),
    "ConsoleDistribution": ("AWS::CloudFront::Distribution", "CreateConsole"),
    "ConsoleUserPoolDomain": ("AWS::Cognito::UserPoolDomain", "ConsoleWithUserPool"),
}
CACHING_OPTIMIZED = "658327ea-f89d-4fab-a63d-7e88639e58f6"
CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
DISTRIBUTION_URL = {"Fn::Sub": "https://${ConsoleDistribution.DomainName}/"}
NO_VALUE = {"Ref": "AWS::NoValue"}

# What the example export below names.
API_URL = "https://abc123.execute-api.us-east-1.amazonaws.com"
COGNITO_DOMAIN = "https://convo-x.auth.us-east-1.amazoncognito.com"


@pytest.fixture(scope="module")
def template() -> dict:
    return stack.load_template()


@pytest.fixture(scope="module")
def resources(template) -> dict:
    return template["Resources"]


def load_script():
    loader = importlib.machinery.SourceFileLoader("deploy_console", str(SCRIPT))
    spec = importlib.util.spec_from_loader("deploy_console", loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["deploy_console"] = module  # its dataclasses look themselves up there
    loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return load_script()


# --------------------------------------------------------------------------
# a small evaluator of the template's intrinsic functions, for checking
# what a value becomes in one deployment


class Deployment:
    def __init__(self, parameters=None, conditions=None, attributes=None,
                 region="us-east-1", stack_id="arn:aws:cloudformation:us-east-1:123456789012:stack/"
                                           "convo/4f1c8a30-5e2b-11ef-9c3d-0a1b2c3d4e5f"):
        self.refs = {"AWS::Region": region, "AWS::URLSuffix": "amazonaws.com", "AWS::Partition": "aws",
                     "AWS::AccountId": "123456789012", "AWS::StackName": "convo", "AWS::StackId": stack_id,
                     **(parameters or {})}
        self.conditions = conditions or {}
        self.attributes = attributes or {}

    def __call__(self, node, local=None):
        local = local or {}
        if isinstance(node, list):
            return [v for v in (self(x, local) for x in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (fn, arg), = node.items()
            if fn == "Ref":
                if arg == "AWS::NoValue":
                    return NO_VALUE
                return self.refs[arg]
            if fn == "Fn::If":
                return self(arg[1] if self.conditions[arg[0]] else arg[2], local)
            if fn == "Fn::Join":
                return arg[0].join(self(arg[1], local))
            if fn == "Fn::Split":
                return self(arg[1], local).split(arg[0])
            if fn == "Fn::Select":
                return self(arg[1], local)[int(arg[0])]
            if fn == "Fn::GetAtt":
                return self.attributes[".".join(arg)]
            if fn == "Fn::Sub":
                text, names = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
                values = {**local, **{k: self(v, local) for k, v in names.items()}}

                def one(m):
                    name = m.group(1)
                    if name in values:
                        return values[name]
                    if name in self.refs:
                        return self.refs[name]
                    return self.attributes[name]
                return re.sub(r"\$\{([^}!]+)\}", one, text)
        return {k: v for k, v in ((k, self(v, local)) for k, v in node.items()) if v is not NO_VALUE}


WITH_POOL = Deployment(
    parameters={"JwtIssuer": ""},
    conditions={"CreateConsole": True, "CreateUserPool": True, "ConsoleWithUserPool": True},
    attributes={"ConsoleDistribution.DomainName": "d111111abcdef8.cloudfront.net"},
)
WITH_ISSUER = Deployment(
    parameters={"JwtIssuer": "https://tenant.example.com/"},
    conditions={"CreateConsole": True, "CreateUserPool": False, "ConsoleWithUserPool": False},
    attributes={"ConsoleDistribution.DomainName": "d111111abcdef8.cloudfront.net"},
)


def policy(text: str) -> dict[str, list[str]]:
    """A content security policy as directive -> sources."""
    out = {}
    for part in text.split(";"):
        words = part.split()
        if words:
            assert words[0] not in out, f"directive {words[0]} twice in {text!r}"
            out[words[0]] = words[1:]
    return out


def covers(pattern: str, source: str) -> bool:
    """Whether a CSP host source (possibly *.wildcard) matches a URL origin."""
    if pattern == source:
        return True
    scheme, _, host = pattern.partition("://")
    s_scheme, _, s_host = source.partition("://")
    return host.startswith("*.") and scheme == s_scheme and s_host.endswith(host[1:]) and len(s_host) > len(host) - 1


def export(tmp_path: Path, *args: str) -> tuple[str, Path]:
    out = tmp_path / "out"
    run = subprocess.run([BIN, "console", "--out", str(out), *args], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip(), out


# --------------------------------------------------------------------------
# the template


def test_console_is_an_option_off_by_default(template, resources):
    param = template["Parameters"]["Console"]
    assert param["Type"] == "String" and param["Default"] == "false"
    assert sorted(param["AllowedValues"]) == ["false", "true"]
    assert "deploy-console" in param["Description"]
    conditions = template["Conditions"]
    assert conditions["CreateConsole"] == {"Fn::Equals": [{"Ref": "Console"}, "true"]}
    assert conditions["ConsoleWithUserPool"] == {"Fn::And": [{"Condition": "CreateConsole"},
                                                            {"Condition": "CreateUserPool"}]}
    for rid, (rtype, condition) in CONSOLE_RESOURCES.items():
        assert resources[rid]["Type"] == rtype, rid
        assert resources[rid]["Condition"] == condition, rid
    # Nothing else is new that exists only with the console.
    conditional = {rid for rid, r in resources.items()
                   if r.get("Condition") in ("CreateConsole", "ConsoleWithUserPool")}
    assert conditional == set(CONSOLE_RESOURCES)


def test_the_bucket_is_private_versioned_and_tls_only(resources):
    props = resources["ConsoleBucket"]["Properties"]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    rules = props["LifecycleConfiguration"]["Rules"]
    assert any(r["Status"] == "Enabled" and r["NoncurrentVersionExpiration"]["NoncurrentDays"] > 0 for r in rules)
    assert "BucketName" not in props, "a generated name: two stacks never collide"
    assert "WebsiteConfiguration" not in props and "AccessControl" not in props

    bucket_policy = resources["ConsoleBucketPolicy"]["Properties"]
    assert bucket_policy["Bucket"] == {"Ref": "ConsoleBucket"}
    statements = bucket_policy["PolicyDocument"]["Statement"]
    allows = [s for s in statements if s["Effect"] == "Allow"]
    denies = [s for s in statements if s["Effect"] == "Deny"]
    # Only CloudFront, only reading objects, only for this distribution.
    assert len(allows) == 1
    allow = allows[0]
    assert allow["Principal"] == {"Service": "cloudfront.amazonaws.com"}
    assert allow["Action"] == "s3:GetObject"
    assert allow["Resource"] == {"Fn::Sub": "${ConsoleBucket.Arn}/*"}
    assert list(allow["Condition"]) == ["StringEquals"]
    source = allow["Condition"]["StringEquals"]["AWS:SourceArn"]
    assert source == {"Fn::Sub": "arn:${AWS::Partition}:cloudfront::${AWS::AccountId}:distribution/${ConsoleDistribution}"}
    # Plain HTTP refused for everyone, on the bucket and every object.
    assert len(denies) == 1
    deny = denies[0]
    assert deny["Principal"] == "*" and deny["Action"] == "s3:*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert {json.dumps(r, sort_keys=True) for r in deny["Resource"]} == {
        json.dumps({"Fn::GetAtt": ["ConsoleBucket", "Arn"]}), json.dumps({"Fn::Sub": "${ConsoleBucket.Arn}/*"})}


def test_the_distribution_reads_the_bucket_through_origin_access_control(resources):
    oac = resources["ConsoleOriginAccessControl"]["Properties"]["OriginAccessControlConfig"]
    assert (oac["OriginAccessControlOriginType"], oac["SigningBehavior"], oac["SigningProtocol"]) == \
        ("s3", "always", "sigv4")
    config = resources["ConsoleDistribution"]["Properties"]["DistributionConfig"]
    assert config["Enabled"] is True
    assert config["DefaultRootObject"] == "index.html"
    assert config["HttpVersion"] == "http2and3"
    assert config["PriceClass"] == "PriceClass_100"
    [origin] = config["Origins"]
    assert origin["DomainName"] == {"Fn::GetAtt": ["ConsoleBucket", "RegionalDomainName"]}
    assert origin["OriginAccessControlId"] == {"Fn::GetAtt": ["ConsoleOriginAccessControl", "Id"]}
    assert origin["S3OriginConfig"] == {"OriginAccessIdentity": ""}, "no legacy origin access identity"
    default = config["DefaultCacheBehavior"]
    [config_json] = config["CacheBehaviors"]
    for behaviour in (default, config_json):
        assert behaviour["TargetOriginId"] == origin["Id"]
        assert behaviour["ViewerProtocolPolicy"] == "redirect-to-https"
        assert behaviour["AllowedMethods"] == ["GET", "HEAD"]
        assert behaviour["CachedMethods"] == ["GET", "HEAD"]
        assert behaviour["Compress"] is True
        assert behaviour["ResponseHeadersPolicyId"] == {"Ref": "ConsoleHeaders"}
        assert "ForwardedValues" not in behaviour, "cache policies, not legacy settings"
    assert default["CachePolicyId"] == CACHING_OPTIMIZED
    assert config_json["PathPattern"].lstrip("/") == "console/config.json"
    assert config_json["CachePolicyId"] == CACHING_DISABLED


def test_security_headers(resources):
    config = resources["ConsoleHeaders"]["Properties"]["ResponseHeadersPolicyConfig"]
    headers = config["SecurityHeadersConfig"]
    assert all(h["Override"] is True for h in headers.values())
    assert headers["StrictTransportSecurity"]["AccessControlMaxAgeSec"] >= 31536000
    assert headers["ContentTypeOptions"] == {"Override": True}
    assert headers["FrameOptions"]["FrameOption"] == "DENY"
    assert headers["ReferrerPolicy"]["ReferrerPolicy"] == "no-referrer"
    assert "ContentSecurityPolicy" in headers["ContentSecurityPolicy"]


def header_policy(resources, deployment: Deployment) -> str:
    csp = resources["ConsoleHeaders"]["Properties"]["ResponseHeadersPolicyConfig"]["SecurityHeadersConfig"]
    return deployment(csp["ContentSecurityPolicy"]["ContentSecurityPolicy"])


def assert_bounds(header: str, exact: str):
    """The header policy is the exact one with its connect-src hosts widened
    to wildcards that cover them (and nothing else is different)."""
    h, e = policy(header), policy(exact)
    assert set(h) == set(e), (header, exact)
    for directive in e:
        if directive != "connect-src":
            assert h[directive] == e[directive], directive
    assert h["connect-src"][0] == e["connect-src"][0] == "'self'"
    exact_hosts, header_hosts = e["connect-src"][1:], h["connect-src"][1:]
    for host in exact_hosts:
        assert any(covers(p, host) for p in header_hosts), f"{host} is outside the header's {header_hosts}"
    for pattern in header_hosts:
        assert pattern.startswith("https://"), pattern
        assert any(covers(pattern, host) for host in exact_hosts), f"{pattern} covers nothing the page needs"
    assert "frame-ancestors" in h


def test_the_header_policy_bounds_the_exact_one(resources, tmp_path):
    """index.html's <meta> policy names this stack's API and sign-in domain;
    the header cannot (see the template), so it allows the region's API
    Gateway and Cognito hosts: directive for directive the same policy,
    wider only in connect-src's hosts."""
    exact, out = export(tmp_path, "--api-url", API_URL, "--cognito-domain", COGNITO_DOMAIN, "--client-id", "c1")
    assert policy(exact)["connect-src"] == ["'self'", API_URL, COGNITO_DOMAIN]
    header = header_policy(resources, WITH_POOL)
    assert policy(header)["connect-src"] == [
        "'self'", "https://*.execute-api.us-east-1.amazonaws.com", "https://*.auth.us-east-1.amazoncognito.com"]
    assert_bounds(header, exact)
    # Both copies of index.html carry the exact policy (frame-ancestors is
    # the header's: a <meta> policy cannot carry it).
    meta = exact.replace("; frame-ancestors 'none'", "")
    for page in ("index.html", "console/index.html"):
        html = (out / page).read_text()
        assert f'<meta http-equiv="Content-Security-Policy" content="{meta}">' in html, page


def test_with_an_external_issuer_the_header_allows_its_host(resources, tmp_path):
    exact, _ = export(tmp_path, "--api-url", API_URL,
                      "--oidc-authorize-url", "https://tenant.example.com/authorize",
                      "--oidc-token-url", "https://tenant.example.com/oauth/token", "--client-id", "c1")
    header = header_policy(resources, WITH_ISSUER)
    assert policy(header)["connect-src"][-1] == "https://tenant.example.com"
    assert_bounds(header, exact)
    # With or without a path, and the branch still evaluates with no issuer.
    for issuer, host in [("https://tenant.example.com", "https://tenant.example.com"),
                         ("https://login.example.org/tenant-1/v2.0", "https://login.example.org"), ("", "https://")]:
        d = Deployment(parameters={"JwtIssuer": issuer}, conditions={"CreateUserPool": False})
        assert policy(header_policy(resources, d))["connect-src"][-1] == host, issuer


def test_the_header_policy_cannot_name_the_api_cfn_lint_sees_the_cycle(tmp_path):
    """Why the header is coarse: naming the stack's own API in it is a
    dependency cycle (distribution -> Api -> app client -> distribution),
    which cfn-lint (and CloudFormation) refuse."""
    text = TEMPLATE.read_text()
    coarse = "https://*.execute-api.${AWS::Region}.${AWS::URLSuffix}"
    assert text.count(coarse) == 1
    path = tmp_path / "template.yaml"
    path.write_text(text.replace(coarse, "https://${Api}.execute-api.${AWS::Region}.${AWS::URLSuffix}"))
    run = subprocess.run([VENV / "cfn-lint", str(path)], capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "E3004" in run.stdout and "ConsoleDistribution" in run.stdout, run.stdout


def test_the_app_client_signs_in_to_the_console(resources):
    props = resources["UserPoolClient"]["Properties"]
    oauth = {
        "AllowedOAuthFlowsUserPoolClient": True,
        "AllowedOAuthFlows": ["code"],
        "AllowedOAuthScopes": ["openid", "email"],
        "SupportedIdentityProviders": ["COGNITO"],
        "CallbackURLs": [DISTRIBUTION_URL],
        "LogoutURLs": [DISTRIBUTION_URL],
    }
    for key, value in oauth.items():
        assert props[key] == {"Fn::If": ["ConsoleWithUserPool", value, NO_VALUE]}, key
    # The page's redirect_uri and logout_uri: its root, with the slash.
    assert WITH_POOL(props["CallbackURLs"]) == ["https://d111111abcdef8.cloudfront.net/"]
    assert props["GenerateSecret"] is False, "a public client: the page keeps no secret"
    # Without the console, the client is as before: no OAuth at all.
    without = Deployment(conditions={"ConsoleWithUserPool": False})
    assert all(without(props[key]) is NO_VALUE for key in oauth)


def test_the_sign_in_domain(resources, template):
    domain = resources["ConsoleUserPoolDomain"]["Properties"]
    assert domain["UserPoolId"] == {"Ref": "UserPool"}
    for guid in ("4f1c8a30-5e2b-11ef-9c3d-0a1b2c3d4e5f", str(uuid.uuid4())):
        d = Deployment(stack_id=f"arn:aws:cloudformation:eu-west-1:123456789012:stack/My-Stack/{guid}")
        prefix = d(domain["Domain"])
        assert prefix == f"convo-{guid}"
        # Cognito's rules for a prefix.
        assert re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", prefix), prefix
        assert not any(word in prefix for word in ("aws", "amazon", "cognito")), prefix
    output = template["Outputs"]["ConsoleSignInDomain"]
    assert output["Condition"] == "ConsoleWithUserPool"
    d = Deployment(region="eu-west-1")
    d.refs["ConsoleUserPoolDomain"] = "convo-abc"
    assert d(output["Value"]) == "https://convo-abc.auth.eu-west-1.amazoncognito.com"


def cors_of(resources) -> dict:
    cors = resources["Api"]["Properties"]["CorsConfiguration"]
    assert cors["Fn::If"][0] == "CreateConsole" and cors["Fn::If"][2] == NO_VALUE
    return cors["Fn::If"][1]


def test_cors_allows_the_console_origin_only(resources):
    cors = cors_of(resources)
    assert cors["AllowOrigins"] == [{"Fn::Sub": "https://${ConsoleDistribution.DomainName}"}]
    assert WITH_POOL(cors["AllowOrigins"]) == ["https://d111111abcdef8.cloudfront.net"]
    assert sorted(h.lower() for h in cors["AllowHeaders"]) == ["authorization", "content-type", "idempotency-key"]
    assert sorted(cors["AllowMethods"]) == ["DELETE", "GET", "PATCH", "POST"]
    assert sorted(h.lower() for h in cors["ExposeHeaders"]) == ["retry-after", "x-convo-after"]
    assert isinstance(cors["MaxAge"], int) and 0 < cors["MaxAge"] <= 86400
    assert cors.get("AllowCredentials") in (None, False), "bearer tokens, never cookies"


def test_cors_covers_what_the_page_sends(resources):
    cors = cors_of(resources)
    app = (ROOT / "console" / "app.js").read_text()
    methods = set(re.findall(r'\bapi\(\s*"([A-Z]+)"', app))
    assert methods and methods <= set(cors["AllowMethods"]), methods
    body = re.search(r"async function api\(.*?\n}\n", app, re.S)
    assert body, "console/app.js has no api() function"
    sent = {n.lower() for n in re.findall(r'headers\[\s*"([^"]+)"\s*\]', body.group(0))}
    literal = re.search(r"const headers = \{(.*?)\};", body.group(0), re.S)
    if literal:
        sent |= {n.strip('"').lower() for n in re.findall(r'("[^"]+"|[A-Za-z-]+)\s*:', literal.group(1))}
    safelisted = {"accept"}
    assert sent - safelisted <= {h.lower() for h in cors["AllowHeaders"]}, sent


def test_the_sam_translator_puts_cors_on_the_api_only_with_the_console():
    """SAM turns CorsConfiguration into the OpenAPI body's
    x-amazon-apigateway-cors; an !If around it stays an !If there, which
    CloudFormation resolves (AWS::NoValue removes the key)."""
    from cfnlint.decode import decode
    from cfnlint.template.transforms._sam import Transform

    raw, matches = decode(str(TEMPLATE))
    assert not matches
    transform = Transform(str(TEMPLATE), raw, "us-east-1")
    assert transform.transform_template() == []
    out = stack._plain(transform.template())
    apis = [r for r in out["Resources"].values() if r["Type"] == "AWS::ApiGatewayV2::Api"]
    assert len(apis) == 1
    cors = apis[0]["Properties"]["Body"]["x-amazon-apigateway-cors"]
    cond, on, off = cors["Fn::If"]
    assert cond == "CreateConsole" and off == NO_VALUE
    assert on["allowOrigins"] == [{"Fn::Sub": "https://${ConsoleDistribution.DomainName}"}]
    assert set(on) == {"allowOrigins", "allowHeaders", "allowMethods", "exposeHeaders", "maxAge"}
    # The console's resources come through the transform as written.
    for rid, (rtype, condition) in CONSOLE_RESOURCES.items():
        assert out["Resources"][rid]["Type"] == rtype and out["Resources"][rid]["Condition"] == condition


def test_console_outputs(template, script):
    outputs = template["Outputs"]
    assert outputs["ConsoleUrl"] == {"Condition": "CreateConsole", "Description": outputs["ConsoleUrl"]["Description"],
                                     "Value": DISTRIBUTION_URL}
    assert outputs["ConsoleBucketName"]["Value"] == {"Ref": "ConsoleBucket"}
    assert outputs["ConsoleDistributionId"]["Value"] == {"Ref": "ConsoleDistribution"}
    # What the deploy script reads exists, under the conditions it expects.
    for key in script.CONSOLE_OUTPUTS:
        assert outputs[key]["Condition"] == "CreateConsole", key
    assert "Condition" not in outputs[script.API_OUTPUT]
    assert outputs[script.SIGN_IN_OUTPUT]["Condition"] == "ConsoleWithUserPool"
    assert outputs[script.CLIENT_OUTPUT]["Condition"] == "CreateUserPool"


# --------------------------------------------------------------------------
# infra/deploy-console, offline


def test_every_file_gets_its_type_and_cache_control(script, tmp_path):
    assert os.access(SCRIPT, os.X_OK) and SCRIPT.read_text().startswith("#!/usr/bin/env python3\n")
    _, out = export(tmp_path, "--api-url", API_URL)
    found = {f.key: f for f in script.files(out)}
    assert set(found) == {"index.html", "console/index.html", "console/app.js", "console/style.css",
                          "console/icon.svg", "console/config.json"}
    assert found["console/app.js"].content_type == "text/javascript; charset=utf-8"
    assert found["console/style.css"].content_type == "text/css; charset=utf-8"
    assert found["console/icon.svg"].content_type == "image/svg+xml"
    assert found["console/config.json"].content_type == "application/json"
    assert found["index.html"].content_type == "text/html; charset=utf-8"
    for key in ("index.html", "console/index.html", "console/config.json"):
        assert found[key].cache_control == "no-cache", key
    for key in ("console/app.js", "console/style.css", "console/icon.svg"):
        assert "max-age=0" in found[key].cache_control and "must-revalidate" in found[key].cache_control
    # index.html goes up last.
    assert [f.key for f in script.files(out)][-2:] == ["console/index.html", "index.html"]


def test_outputs_become_console_options(script):
    base = {"ApiUrl": API_URL, "ConsoleBucketName": "b", "ConsoleDistributionId": "E1"}
    assert script.console_arguments(base) == ["--api-url", API_URL]
    pool = {**base, "ConsoleSignInDomain": COGNITO_DOMAIN, "UserPoolClientId": "c1"}
    assert script.console_arguments(pool) == ["--api-url", API_URL, "--cognito-domain", COGNITO_DOMAIN,
                                              "--client-id", "c1"]
    extra = ["--oidc-authorize-url", "https://i/a", "--oidc-token-url", "https://i/t", "--client-id", "x"]
    assert script.console_arguments(base, extra=extra) == ["--api-url", API_URL, *extra]
    with pytest.raises(script.DeployError, match="own user pool"):
        script.console_arguments(pool, extra=extra)
    with pytest.raises(script.DeployError, match="Console=true"):
        script.console_arguments({"ApiUrl": API_URL, "TableName": "t"}, "stack 's'")
    with pytest.raises(script.DeployError, match="lacks the output.*ConsoleDistributionId"):
        script.console_arguments({"ApiUrl": API_URL, "ConsoleBucketName": "b"})
    with pytest.raises(script.DeployError, match="lacks the output ApiUrl"):
        script.console_arguments({"ConsoleBucketName": "b", "ConsoleDistributionId": "E1"})
    with pytest.raises(script.DeployError, match="no UserPoolClientId"):
        script.console_arguments({**base, "ConsoleSignInDomain": COGNITO_DOMAIN})


def test_which_convo_local(script, tmp_path):
    with pytest.raises(script.DeployError, match="no such file"):
        script.convo_local_command(str(tmp_path / "missing"))
    assert script.convo_local_command(BIN) == [BIN]
    (tmp_path / "target" / "debug").mkdir(parents=True)
    (tmp_path / "target" / "debug" / "convo-local").write_text("")
    assert script.convo_local_command(root=tmp_path) == [str(tmp_path / "target" / "debug" / "convo-local")]
    (tmp_path / "target" / "release").mkdir()
    (tmp_path / "target" / "release" / "convo-local").write_text("")
    assert script.convo_local_command(root=tmp_path) == [str(tmp_path / "target" / "release" / "convo-local")]
    if any((Path(p) / "cargo").exists() for p in os.environ.get("PATH", "").split(os.pathsep)):
        assert script.convo_local_command(root=tmp_path / "nothing")[:2] == ["cargo", "run"]


# --------------------------------------------------------------------------
# infra/deploy-console against moto


@pytest.fixture(scope="module")
def aws():
    if not os.environ.get("AWS_ENDPOINT_URL"):
        pytest.fail("AWS_ENDPOINT_URL is not set (tests/run starts moto and sets it)")
    # No endpoint passed: boto3 itself honours AWS_ENDPOINT_URL, as the
    # script relies on.
    clients = {name: boto3.client(name) for name in ("s3", "cloudfront", "cloudformation")}
    assert all(c.meta.endpoint_url == os.environ["AWS_ENDPOINT_URL"] for c in clients.values())
    return clients


def console_stack(aws, name: str, resources: dict, distribution_id: str, sign_in: bool = True) -> dict:
    """A stack with the template's console bucket and the outputs the real
    stack has; the distribution is made directly (moto's CloudFormation
    has no CloudFront), and versioning set directly (moto's CloudFormation
    leaves the bucket's settings out)."""
    params = {"ApiUrl": API_URL, "DistributionId": distribution_id, "SignInDomain": COGNITO_DOMAIN,
              "ClientId": "c1", "Url": "https://d111111abcdef8.cloudfront.net/"}
    outputs = {
        "ApiUrl": {"Value": {"Ref": "ApiUrl"}},
        "ConsoleBucketName": {"Value": {"Ref": "ConsoleBucket"}},
        "ConsoleDistributionId": {"Value": {"Ref": "DistributionId"}},
        "ConsoleUrl": {"Value": {"Ref": "Url"}},
    }
    if sign_in:
        outputs["ConsoleSignInDomain"] = {"Value": {"Ref": "SignInDomain"}}
        outputs["UserPoolClientId"] = {"Value": {"Ref": "ClientId"}}
    body = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Parameters": {k: {"Type": "String"} for k in params},
        "Resources": {"ConsoleBucket": {"Type": "AWS::S3::Bucket",
                                        "Properties": resources["ConsoleBucket"]["Properties"]}},
        "Outputs": outputs,
    }
    cfn = aws["cloudformation"]
    cfn.create_stack(StackName=name, TemplateBody=json.dumps(body),
                     Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()])
    waiter = cfn.get_waiter("stack_create_complete")
    waiter.wait(StackName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    got = {o["OutputKey"]: o["OutputValue"] for o in cfn.describe_stacks(StackName=name)["Stacks"][0]["Outputs"]}
    aws["s3"].put_bucket_versioning(Bucket=got["ConsoleBucketName"], VersioningConfiguration={"Status": "Enabled"})
    return got


def distribution(aws, bucket_domain: str) -> str:
    answer = aws["cloudfront"].create_distribution(DistributionConfig={
        "CallerReference": uuid.uuid4().hex, "Comment": "convo console", "Enabled": True,
        "DefaultRootObject": "index.html",
        "Origins": {"Quantity": 1, "Items": [{"Id": "console-bucket", "DomainName": bucket_domain,
                                              "S3OriginConfig": {"OriginAccessIdentity": ""}}]},
        "DefaultCacheBehavior": {"TargetOriginId": "console-bucket", "ViewerProtocolPolicy": "redirect-to-https",
                                 "CachePolicyId": CACHING_OPTIMIZED},
    })
    return answer["Distribution"]["Id"]


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ})


def test_deploy_uploads_the_page_deletes_stale_files_and_invalidates(aws, resources):
    s3, cloudfront = aws["s3"], aws["cloudfront"]
    name = f"console-{uuid.uuid4().hex[:8]}"
    dist = distribution(aws, "placeholder.s3.us-east-1.amazonaws.com")
    outputs = console_stack(aws, name, resources, dist)
    bucket = outputs["ConsoleBucketName"]
    # What a previous version left behind.
    s3.put_object(Bucket=bucket, Key="console/old.js", Body=b"//")
    s3.put_object(Bucket=bucket, Key="stale.txt", Body=b"x")

    run = run_script("--stack", name, "--region", "us-east-1", "--convo-local", BIN)
    assert run.returncode == 0, run.stderr + run.stdout
    assert "https://d111111abcdef8.cloudfront.net/" in run.stdout

    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert keys == {"index.html", "console/index.html", "console/app.js", "console/style.css",
                    "console/icon.svg", "console/config.json"}
    expected = {
        "index.html": ("text/html; charset=utf-8", "no-cache"),
        "console/index.html": ("text/html; charset=utf-8", "no-cache"),
        "console/config.json": ("application/json", "no-cache"),
        "console/app.js": ("text/javascript; charset=utf-8", None),
        "console/style.css": ("text/css; charset=utf-8", None),
        "console/icon.svg": ("image/svg+xml", None),
    }
    for key, (content_type, cache) in expected.items():
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head["ContentType"] == content_type, key
        if cache:
            assert head["CacheControl"] == cache, key
        else:
            assert "max-age=0" in head["CacheControl"] and "must-revalidate" in head["CacheControl"], key
    # The page's own files, unchanged.
    for asset in ("app.js", "style.css", "icon.svg"):
        body = s3.get_object(Bucket=bucket, Key=f"console/{asset}")["Body"].read()
        assert body == (ROOT / "console" / asset).read_bytes(), asset

    config = json.loads(s3.get_object(Bucket=bucket, Key="console/config.json")["Body"].read())
    assert config["apiUrl"] == API_URL
    assert config["devSignIn"] is False
    oidc = config["oidc"]
    assert oidc["authorizeUrl"] == f"{COGNITO_DOMAIN}/oauth2/authorize"
    assert oidc["tokenUrl"] == f"{COGNITO_DOMAIN}/oauth2/token"
    assert oidc["logoutUrl"] == f"{COGNITO_DOMAIN}/logout"
    assert oidc["clientId"] == "c1"
    assert oidc["scope"] == "openid email"

    index = s3.get_object(Bucket=bucket, Key="index.html")["Body"].read().decode()
    meta = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', index).group(1)
    assert policy(meta)["connect-src"] == ["'self'", API_URL, COGNITO_DOMAIN]
    assert f"content security policy (in index.html): {meta}; frame-ancestors 'none'" in run.stdout

    invalidations = cloudfront.list_invalidations(DistributionId=dist)["InvalidationList"]
    assert invalidations["Quantity"] == 1
    inv = cloudfront.get_invalidation(DistributionId=dist, Id=invalidations["Items"][0]["Id"])["Invalidation"]
    assert inv["InvalidationBatch"]["Paths"]["Items"] == ["/*"]
    assert inv["Id"] in run.stdout

    # A second run replaces, deletes nothing more, invalidates again.
    result = load_script().deploy(name, "us-east-1", BIN, log=lambda *_: None)
    assert result["deleted"] == [] and len(result["uploaded"]) == 6
    assert cloudfront.list_invalidations(DistributionId=dist)["InvalidationList"]["Quantity"] == 2

    # Versioned: the stale files are delete markers over their old versions,
    # and each file has two versions now. --empty removes them all, so
    # CloudFormation can delete the bucket.
    versions = s3.list_object_versions(Bucket=bucket)
    assert {m["Key"] for m in versions.get("DeleteMarkers", [])} == {"console/old.js", "stale.txt"}
    run = run_script("--stack", name, "--empty")
    assert run.returncode == 0, run.stderr
    assert f"deleted {6 * 2 + 2 + 2} object versions" in run.stdout, run.stdout
    versions = s3.list_object_versions(Bucket=bucket)
    assert not versions.get("Versions") and not versions.get("DeleteMarkers")
    s3.delete_bucket(Bucket=bucket)


def test_deploy_without_a_user_pool_lets_the_page_take_a_token(aws, resources):
    name = f"console-{uuid.uuid4().hex[:8]}"
    dist = distribution(aws, "placeholder.s3.us-east-1.amazonaws.com")
    outputs = console_stack(aws, name, resources, dist, sign_in=False)
    run = run_script("--stack", name, "--convo-local", BIN)
    assert run.returncode == 0, run.stderr
    assert "asks for a bearer token" in run.stdout
    config = json.loads(aws["s3"].get_object(Bucket=outputs["ConsoleBucketName"],
                                             Key="console/config.json")["Body"].read())
    assert config["apiUrl"] == API_URL and config["oidc"] is None


def test_deploy_refuses_a_stack_without_console(aws, script):
    cfn = aws["cloudformation"]
    name = f"noconsole-{uuid.uuid4().hex[:8]}"
    body = {"AWSTemplateFormatVersion": "2010-09-09",
            "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
            "Outputs": {"ApiUrl": {"Value": API_URL}, "TableName": {"Value": name}}}
    cfn.create_stack(StackName=name, TemplateBody=json.dumps(body))
    cfn.get_waiter("stack_create_complete").wait(StackName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    run = run_script("--stack", name, "--convo-local", BIN)
    assert run.returncode == 1
    assert "has no console" in run.stderr and "Console=true" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr

    run = run_script("--stack", f"missing-{uuid.uuid4().hex[:8]}", "--convo-local", BIN)
    assert run.returncode == 1
    assert "does not exist" in run.stderr and "Traceback" not in run.stderr, run.stderr
    with pytest.raises(script.DeployError, match="does not exist"):
        script.stack_outputs(cfn, "missing-stack-x")
    run = run_script("--stack", name, "--empty")
    assert run.returncode == 1 and "has no console" in run.stderr, run.stderr
