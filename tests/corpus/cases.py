"""The development corpus: real security releases of pure-Python PyPI packages.

Each case pairs a vulnerable release (``vulnerable``) with the first fixed one (``fixed``) and
names the behavioural check under ``checks/`` that shows the bug. Stdlib only, so the test suite
and ``validate.py`` can import it without the corpus packages installed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    """One A -> B security release and the check module that shows its bug."""

    key: str
    distribution: str
    vulnerable: str
    fixed: str
    cve: str
    hotpatchable: bool
    check: str
    extra_requirements: tuple[str, ...] = ()

    def requirement(self, version: str) -> str:
        """Return a pip requirement pinning this distribution, e.g. ``"zipp==3.19.0"``."""
        return f"{self.distribution}=={version}"


CASES: tuple[Case, ...] = (
    Case(
        key="urllib3-43804-2.0",
        distribution="urllib3",
        vulnerable="2.0.5",
        fixed="2.0.6",
        cve="CVE-2023-43804",
        hotpatchable=True,
        check="urllib3_43804",
    ),
    Case(
        key="urllib3-45803",
        distribution="urllib3",
        vulnerable="2.0.6",
        fixed="2.0.7",
        cve="CVE-2023-45803",
        hotpatchable=True,
        check="urllib3_45803",
    ),
    Case(
        key="requests-32681",
        distribution="requests",
        vulnerable="2.30.0",
        fixed="2.31.0",
        cve="CVE-2023-32681",
        hotpatchable=True,
        check="requests_32681",
    ),
    Case(
        key="jinja2-22195",
        distribution="jinja2",
        vulnerable="3.1.2",
        fixed="3.1.3",
        cve="CVE-2024-22195",
        hotpatchable=True,
        check="jinja2_22195",
    ),
    Case(
        key="jinja2-27516",
        distribution="jinja2",
        vulnerable="3.1.5",
        fixed="3.1.6",
        cve="CVE-2025-27516",
        hotpatchable=True,
        check="jinja2_27516",
    ),
    Case(
        key="werkzeug-46136",
        distribution="werkzeug",
        vulnerable="3.0.0",
        fixed="3.0.1",
        cve="CVE-2023-46136",
        hotpatchable=True,
        check="werkzeug_46136",
    ),
    Case(
        key="flask-30861",
        distribution="flask",
        vulnerable="2.3.1",
        fixed="2.3.2",
        cve="CVE-2023-30861",
        hotpatchable=True,
        check="flask_30861",
    ),
    Case(
        key="django-27351",
        distribution="django",
        vulnerable="5.0.2",
        fixed="5.0.3",
        cve="CVE-2024-27351",
        hotpatchable=True,
        check="django_27351",
    ),
    Case(
        key="sqlparse-30608",
        distribution="sqlparse",
        vulnerable="0.4.3",
        fixed="0.4.4",
        cve="CVE-2023-30608",
        # The release also turns Lexer into a configurable singleton: get_tokens changes from a
        # staticmethod to a method reading instance state that live lexers lack, and the regex
        # table is computed in two steps at import. It must ship as a baseline.
        hotpatchable=False,
        check="sqlparse_30608",
    ),
    Case(
        key="tornado-28370",
        distribution="tornado",
        vulnerable="6.3.1",
        fixed="6.3.2",
        cve="CVE-2023-28370",
        hotpatchable=True,
        check="tornado_28370",
    ),
    Case(
        key="multipart-53981",
        distribution="python-multipart",
        vulnerable="0.0.17",
        fixed="0.0.18",
        cve="CVE-2024-53981",
        hotpatchable=True,
        check="multipart_53981",
    ),
    # Starlette's form parser needs python-multipart; 0.0.12 is the last release whose import
    # name is plain ``multipart`` (later ones warn on it), which both starlette releases use.
    Case(
        key="starlette-47874",
        distribution="starlette",
        vulnerable="0.39.2",
        fixed="0.40.0",
        cve="CVE-2024-47874",
        hotpatchable=True,
        check="starlette_47874",
        extra_requirements=("python-multipart==0.0.12",),
    ),
    Case(
        key="pyjwt-53861",
        distribution="pyjwt",
        vulnerable="2.10.0",
        fixed="2.10.1",
        cve="CVE-2024-53861",
        hotpatchable=True,
        check="pyjwt_53861",
    ),
    Case(
        key="zipp-5569",
        distribution="zipp",
        vulnerable="3.19.0",
        fixed="3.19.1",
        cve="CVE-2024-5569",
        hotpatchable=True,
        check="zipp_5569",
    ),
    # The 4.7 release grows AbstractKey.__slots__: live keys break, so the builder must refuse.
    Case(
        key="rsa-25658",
        distribution="rsa",
        vulnerable="4.6",
        fixed="4.7",
        cve="CVE-2020-25658",
        hotpatchable=False,
        check="rsa_25658",
    ),
    # Data-only fix (cacert.pem); SSL contexts built earlier keep trusting the removed roots.
    Case(
        key="certifi-37920",
        distribution="certifi",
        vulnerable="2023.5.7",
        fixed="2023.7.22",
        cve="CVE-2023-37920",
        hotpatchable=False,
        check="certifi_37920",
    ),
)

BY_KEY: dict[str, Case] = {case.key: case for case in CASES}
