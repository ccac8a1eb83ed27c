"""Small pages around the portal: the API reference and the favicon."""
from __future__ import annotations

from pathlib import Path

from flask import Blueprint, abort, render_template, send_from_directory

from app.paths import NODE_MODULES
from app.portal.security import VIEW, requires

bp = Blueprint("site", __name__)
# swagger-ui-dist comes from npm like asciinema-player (`make install` runs `npm ci`).
SWAGGER = NODE_MODULES / "swagger-ui-dist"
SWAGGER_FILES = {"swagger-ui-bundle.js", "swagger-ui.css"}
STATIC = Path(__file__).resolve().parent / "static"


@bp.get("/api-docs")
@requires(*VIEW)
def api_docs():
    """/api/v1/openapi.json rendered for people."""
    return render_template("api_docs.html")


@bp.get("/vendor/swagger-ui/<name>")
def swagger_asset(name: str):
    if name not in SWAGGER_FILES:
        abort(404)
    return send_from_directory(SWAGGER, name, max_age=86400)


@bp.get("/favicon.ico")
def favicon():
    return send_from_directory(STATIC, "favicon.svg", mimetype="image/svg+xml", max_age=86400)
