"""The Zendesk app in crm_plugin/zendesk_app/, checked against what Zendesk validates.

``zcli apps:validate`` and ``apps:package`` send the zip to a Zendesk account, so CI can't run
them. These tests check the rules Zendesk's own validator applies (the zendesk_apps_support gem
that zcli and the upload run: validations/manifest.rb, translations.rb, source.rb, and the
marketplace asset sizes), and drive the bootstrap page's script with a stand-in ZAF client.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "crm_plugin" / "zendesk_app"
BOOTSTRAP = ROOT / "crm_plugin" / "static" / "zendesk" / "bootstrap.js"

# zendesk_apps_support: Manifest::RUBY_TO_JSON (every key Zendesk reads), Parameter::TYPES,
# AppVersion::TO_BE_SERVED, Translations::VALID_LOCALE; Location: support's locations.
MANIFEST_KEYS = {
    "requirementsOnly",
    "marketingOnly",
    "version",
    "author",
    "name",
    "experiments",
    "frameworkVersion",
    "singleInstall",
    "signedUrls",
    "noTemplate",
    "defaultLocale",
    "location",
    "private",
    "oauth",
    "parameters",
    "domainWhitelist",
    "remoteInstallationURL",
    "termsConditionsURL",
    "gaID",
}
PARAMETER_TYPES = {"text", "password", "checkbox", "url", "number", "multiline", "hidden"}
FRAMEWORK_VERSIONS = {"2.0"}  # valid for a new app (AppVersion::VALID_FOR_CREATE)
VALID_LOCALE = re.compile(r"^[a-z]{2}(-\w{2,3})?$")
SUPPORT_LOCATIONS = {
    "top_bar",
    "nav_bar",
    "ticket_sidebar",
    "new_ticket_sidebar",
    "user_sidebar",
    "organization_sidebar",
    "background",
    "modal",
    "ticket_editor",
}


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        assert len(keys) == len(set(keys)), f"duplicate keys: {keys}"  # NoOverrideHash
        return dict(pairs)

    return json.loads((APP / "manifest.json").read_text(), object_pairs_hook=no_duplicates)


def test_the_manifest_has_only_keys_zendesk_reads_and_the_required_ones(manifest):
    assert set(manifest) <= MANIFEST_KEYS
    # Required: author and defaultLocale; location and frameworkVersion for an app with a UI.
    for key in ("author", "defaultLocale", "location", "frameworkVersion"):
        assert key in manifest, key


def test_the_manifest_fields_have_the_types_zendesk_checks(manifest):
    for key in ("requirementsOnly", "marketingOnly", "singleInstall", "signedUrls", "private"):
        assert isinstance(manifest.get(key, False), bool), key
    for key in ("defaultLocale", "version", "frameworkVersion", "name"):
        assert isinstance(manifest[key], str), key
    author = manifest["author"]
    assert set(author) == {"name", "email", "url"}
    assert all(isinstance(author[key], str) and author[key] for key in author)
    assert re.fullmatch(r"https://[^\s/]+(/\S*)?", author["url"])
    assert re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]+", author["email"])
    assert manifest["frameworkVersion"] in FRAMEWORK_VERSIONS
    assert VALID_LOCALE.match(manifest["defaultLocale"])


def test_the_app_is_signed_and_lives_in_the_ticket_sidebar_of_the_backend(manifest):
    assert manifest["signedUrls"] is True
    assert manifest["private"] is True
    assert set(manifest["location"]) == {"support"}
    locations = manifest["location"]["support"]
    assert set(locations) <= SUPPORT_LOCATIONS
    sidebar = locations["ticket_sidebar"]
    # A setting placeholder: Zendesk's validator accepts it as the location's URL as is.
    assert sidebar["url"] == "{{setting.backend_url}}/panel/launch/zendesk/"
    assert isinstance(sidebar.get("flexible", True), bool)
    assert set(sidebar) <= {"url", "flexible", "autoLoad", "autoHide", "signed", "size"}


def test_the_backend_url_is_a_required_url_parameter(manifest):
    parameters = manifest["parameters"]
    assert isinstance(parameters, list)
    names = [parameter["name"] for parameter in parameters]
    assert len(names) == len(set(names))
    assert "name" not in names  # Zendesk refuses a parameter called "name"
    for parameter in parameters:
        assert parameter.get("type", "text") in PARAMETER_TYPES
        assert isinstance(parameter.get("required", False), bool)
        assert isinstance(parameter.get("secure", False), bool)
        assert not (parameter.get("type") == "hidden" and parameter.get("required"))
    backend = next(p for p in parameters if p["name"] == "backend_url")
    assert (backend["type"], backend["required"], backend.get("secure", False)) == (
        "url",
        True,
        False,  # a secure setting is hidden from the browser, and the URL is no secret
    )


def test_the_default_locales_translations_name_the_app_and_its_parameters(manifest):
    translations = sorted((APP / "translations").glob("*.json"))
    assert APP / "translations" / f"{manifest['defaultLocale']}.json" in translations
    for path in translations:
        assert VALID_LOCALE.match(path.stem), path.name
        data = json.loads(path.read_text())
        assert isinstance(data, dict)
    english = json.loads((APP / "translations" / "en.json").read_text())["app"]
    # A private app needs "name"; these four are what a public listing needs.
    for key in ("name", "short_description", "long_description", "installation_instructions"):
        assert isinstance(english[key], str), key
        assert english[key].strip(), key
    for parameter in manifest["parameters"]:
        assert english["parameters"][parameter["name"]]["label"]


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path.name
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_logos_are_pngs_of_the_sizes_zendesk_asks_for():
    assert _png_size(APP / "assets" / "logo.png") == (320, 320)
    assert _png_size(APP / "assets" / "logo-small.png") == (128, 128)


def test_an_iframe_only_app_packages_no_code():
    """Zendesk refuses app.js, lib/*.js, templates or app.css in a framework 2 app's zip."""
    packaged = {path.relative_to(APP).as_posix() for path in _packaged_files()}
    assert "manifest.json" in packaged
    assert not [
        path
        for path in packaged
        if path == "app.js" or path == "app.css" or path.startswith(("lib/", "templates/"))
    ]


def _packaged_files() -> list[Path]:
    return [
        path
        for path in APP.rglob("*")
        if path.is_file()
        and path.relative_to(APP).parts[0] in {"manifest.json", "translations", "assets"}
    ]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_zendesk_app_builds_the_zip(tmp_path):
    target = tmp_path / "app.zip"

    subprocess.run(
        ["make", "-s", "zendesk-app", f"ZENDESK_APP_ZIP={target}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )

    with zipfile.ZipFile(target) as archive:
        names = set(archive.namelist())
    assert {
        "manifest.json",
        "translations/en.json",
        "assets/logo.png",
        "assets/logo-small.png",
    } <= (names)
    assert not [name for name in names if name.endswith((".js", ".md"))]


# ---------------------------------------------------------------------------------------------
# The bootstrap page's script, with a stand-in for the ZAF client (node, no browser)
# ---------------------------------------------------------------------------------------------

HARNESS = r"""
const bootstrap = require(process.argv[2]);
const scenario = JSON.parse(process.argv[3]);
const elements = {};
const submitted = [];
function element(tag) {
  return {
    tag, attributes: {}, children: [], textContent: "",
    setAttribute(name, value) { this.attributes[name] = value; },
    appendChild(child) { this.children.push(child); },
    submit() { submitted.push(this); },
  };
}
if (scenario.config !== null) {
  elements["twosv-zendesk-config"] = Object.assign(element("script"), {
    textContent: JSON.stringify(scenario.config),
  });
}
elements["twosv-zendesk-message"] = element("p");
const body = element("body");
const calls = [];
const window = {
  location: { search: scenario.search },
  document: {
    body,
    getElementById: (id) => elements[id] || null,
    createElement: element,
  },
  ZAFClient: {
    init() {
      if (!scenario.init) return false;
      return {
        invoke(name, options) { calls.push(["invoke", name, options]); },
        get(path) {
          calls.push(["get", path]);
          if (scenario.fails) return Promise.reject(new Error("no"));
          return Promise.resolve({ [path]: scenario.externalId });
        },
      };
    },
  },
};
bootstrap.start(window).then((outcome) => {
  const form = submitted[0];
  console.log(JSON.stringify({
    outcome,
    calls,
    message: elements["twosv-zendesk-message"].textContent,
    form: !form ? null : {
      method: form.attributes.method,
      action: form.attributes.action,
      fields: Object.fromEntries(form.children.map((c) => [c.attributes.name, c.attributes.value])),
      types: form.children.map((c) => c.attributes.type),
    },
  }));
});
"""


def run_bootstrap(tmp_path: Path, **scenario: Any) -> dict[str, Any]:
    defaults = {
        "config": {
            "open_url": "/panel/zendesk/open/",
            "fields": {"panel_session": "opaque-session-token"},
            "height": "600px",
        },
        "search": "?origin=https%3A%2F%2Facme.zendesk.com&app_guid=abc-123&other=drop-me",
        "init": True,
        "externalId": "cust-42",
        "fails": False,
    }
    harness = tmp_path / "harness.js"
    harness.write_text(HARNESS)
    result = subprocess.run(
        ["node", str(harness), str(BOOTSTRAP), json.dumps({**defaults, **scenario})],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return json.loads(result.stdout)


node = pytest.mark.skipif(shutil.which("node") is None, reason="needs node")


@node
def test_the_bootstrap_opens_the_requesters_panel_by_post_carrying_origin_and_app_guid(tmp_path):
    result = run_bootstrap(tmp_path)

    assert result["outcome"] == "opened"
    assert ["get", "ticket.requester.externalId"] in result["calls"]
    assert ["invoke", "resize", {"width": "100%", "height": "600px"}] in result["calls"]
    form = result["form"]
    assert form["method"] == "post"
    assert form["action"] == (
        "/panel/zendesk/open/?origin=https%3A%2F%2Facme.zendesk.com&app_guid=abc-123"
    )
    assert form["fields"] == {"panel_session": "opaque-session-token", "customer_id": "cust-42"}
    assert set(form["types"]) == {"hidden"}
    # Nothing but Zendesk's two parameters reaches the URL; no token does.
    assert "opaque" not in form["action"]
    assert "cust-42" not in form["action"]


@node
@pytest.mark.parametrize(
    ("scenario", "outcome"),
    [
        ({"externalId": None}, "no_external_id"),
        ({"externalId": ""}, "no_external_id"),
        ({"externalId": "has spaces/and?query"}, "bad_external_id"),
        ({"init": False}, "no_client"),
        ({"config": None}, "no_config"),
        ({"fails": True}, "error"),
    ],
)
def test_the_bootstrap_says_why_it_cannot_open_a_panel(tmp_path, scenario, outcome):
    result = run_bootstrap(tmp_path, **scenario)

    assert result["outcome"] == outcome
    assert result["form"] is None
    assert result["message"]


@node
def test_a_numeric_external_id_is_sent_as_text(tmp_path):
    assert run_bootstrap(tmp_path, externalId=1234)["form"]["fields"]["customer_id"] == "1234"
