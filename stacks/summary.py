"""Print a short summary of a synthesized cloud assembly: stacks, endpoints, domains.

Usage: python -m stacks.summary cdk.out
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _templates(outdir: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """(stage, stack name, template) for every stack in the assembly and its stages."""
    found = []
    for manifest_path in sorted(outdir.rglob("manifest.json")):
        manifest = json.loads(manifest_path.read_text())
        stage = manifest_path.parent.name.removeprefix("assembly-") if manifest_path.parent != outdir else ""
        for artifact in manifest.get("artifacts", {}).values():
            if artifact.get("type") != "aws:cloudformation:stack":
                continue
            template = json.loads((manifest_path.parent / artifact["properties"]["templateFile"]).read_text())
            name = artifact.get("properties", {}).get("stackName") or artifact.get("displayName", "?")
            found.append((stage, name, template))
    return found


def _image(value: Any) -> str:
    if isinstance(value, dict) and "Fn::FindInMap" in value:
        return f"{value['Fn::FindInMap'][0]} (per-region mapping)"
    return str(value).rsplit("/", 1)[-1]


def summarize(outdir: Path) -> list[str]:
    lines = []
    for stage, name, template in _templates(outdir):
        resources = template.get("Resources", {})
        lines.append(f"{stage or '-':5} {name:32} {len(resources):4} resources")
        models = {k: r for k, r in resources.items() if r["Type"] == "AWS::SageMaker::Model"}
        for r in resources.values():
            props = r.get("Properties", {})
            if r["Type"] == "AWS::SageMaker::EndpointConfig":
                for v in props.get("ProductionVariants", []):
                    model_ref = v.get("ModelName", {}).get("Fn::GetAtt", ["?"])[0]
                    container = models.get(model_ref, {}).get("Properties", {}).get("PrimaryContainer", {})
                    env = container.get("Environment", {})
                    lines.append(f"        endpoint variant: {v['InstanceType']} x{v['InitialInstanceCount']}  "
                                 f"image {_image(container.get('Image'))}  model {env.get('HF_MODEL_ID', 'custom')}")
            if r["Type"] == "AWS::OpenSearchService::Domain":
                c = props.get("ClusterConfig", {})
                masters = f" + {c['DedicatedMasterCount']} x {c['DedicatedMasterType']} masters" \
                    if c.get("DedicatedMasterEnabled") else ""
                lines.append(f"        domain: {props.get('EngineVersion')}  {c.get('InstanceCount')} x "
                             f"{c.get('InstanceType')}{masters}  {props.get('EBSOptions', {}).get('VolumeSize')} GiB")
    return lines


if __name__ == "__main__":
    print("\n".join(summarize(Path(sys.argv[1] if len(sys.argv) > 1 else "cdk.out"))))
