"""What the Hub checks in a dataset card's metadata, for ``FakeHubServer``'s ``/api/validate-yaml``."""

from __future__ import annotations

import re

import yaml

# the licence identifiers the Hub accepts in card metadata (https://huggingface.co/docs/hub/repositories-licenses)
HUB_LICENSES = set(
    """
apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0 bigcode-openrail-m
afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc cc0-1.0 cc-by-2.0 cc-by-2.5
cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0
cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0 cdla-permissive-1.0
cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl
lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c ms-pl apple-ascl apple-amlr mpl-2.0 odc-by odbl openrail++
osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr deepfloyd-if-license llama2 llama3 llama3.1 llama3.2
llama3.3 gemma unknown other
""".split()
)
SIZE_CATEGORIES = {
    "unknown",
    "n<1K",
    "1K<n<10K",
    "10K<n<100K",
    "100K<n<1M",
    "1M<n<10M",
    "10M<n<100M",
    "100M<n<1B",
    "1B<n<10B",
    "10B<n<100B",
    "100B<n<1T",
    "n>1T",
}


def validate_card_metadata(content: str) -> list[str]:
    """The checks the Hub makes on a dataset card's YAML that a generated card could fail."""
    match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
    if not match:
        return []
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as e:
        return [f"YAML parse error: {e}"]
    if not isinstance(meta, dict):
        return ["metadata must be a YAML mapping"]
    errors = []
    licences = meta.get("license", [])
    for lic in [licences] if isinstance(licences, str) else licences:
        if lic not in HUB_LICENSES:
            errors.append(f'"license" must be one of the Hub licence identifiers, got {lic!r}')
    sizes = meta.get("size_categories", [])
    for size in [sizes] if isinstance(sizes, str) else sizes:
        if size not in SIZE_CATEGORIES:
            errors.append(f'"size_categories" has unknown value {size!r}')
    for i, cfg in enumerate(meta.get("configs") or []):
        if not isinstance(cfg, dict) or not isinstance(cfg.get("config_name"), str):
            errors.append(f'"configs[{i}].config_name" must be a string')
            continue
        files = cfg.get("data_files")
        ok = isinstance(files, str) or (
            isinstance(files, list)
            and all(isinstance(f, str) or (isinstance(f, dict) and {"split", "path"} <= set(f)) for f in files)
        )
        if not ok:
            errors.append(f'"configs[{i}].data_files" must be a path or a list of {{split, path}}')
    return errors
