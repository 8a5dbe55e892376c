"""Snapshot generation: a differential StructureDefinition merged onto its base, down to R4.

http://hl7.org/fhir/R4/profiling.html#snapshot. The algorithm, per differential element in order:
- an element the snapshot has (by id) takes the differential's constraints (`_merge`);
- a new slice `a.b:s` copies the unsliced `a.b` with its descendants, is put after the last existing
  slice of `a.b`, and starts at min 0 unless the differential says otherwise;
- a child of an element whose children are not in the snapshot yet (`Patient.identifier.system`)
  first unfolds that element from its type: the type's profile if it names one (so extension
  slices get the children of their extension definition), else the base type; `contentReference`
  elements unfold from the element they refer to;
- a renamed choice (`Observation.valueQuantity`) constrains `Observation.value[x]` to that type.
Element ids follow the R4 rules (`path:sliceName` per sliced step), so a differential without ids
gets them from path and sliceName.
"""

from __future__ import annotations

import copy
from typing import Any

from profiles.registry import Registry

Element = dict[str, Any]
_MERGE_KEYS = ("min", "max", "maxLength", "contentReference", "mustSupport")


class SnapshotError(Exception):
    pass


def snapshot(registry: Registry, url: str) -> list[Element]:
    """The snapshot elements of a StructureDefinition (generated if it has none), cached."""
    return registry.cached(("snapshot", url), lambda: _build(registry, url))


def _build(registry: Registry, url: str) -> list[Element]:
    sd = registry.structure_definition(url)
    if sd is None:
        raise SnapshotError(f"Unknown StructureDefinition {url}")
    if sd.get("snapshot", {}).get("element") and (registry.is_base(url) or not sd.get("differential")):
        return sd["snapshot"]["element"]
    base_url = sd.get("baseDefinition")
    if not base_url:
        raise SnapshotError(f"{url} has neither a snapshot nor a baseDefinition")
    if base_url == url:
        raise SnapshotError(f"{url} is its own base")
    base = snapshot(registry, base_url)
    gen = _Generator(registry, copy.deepcopy(base))
    els = gen.apply(sd.get("differential", {}).get("element", []))
    registry.cache[("snapshot-unmatched", url)] = gen.unmatched
    return els


def unmatched(registry: Registry, url: str) -> list[str]:
    """Differential element ids the snapshot of `url` could not place (should be none)."""
    snapshot(registry, url)
    return list(registry.cache.get(("snapshot-unmatched", url), []))


def _split(elem_id: str) -> list[str]:
    return elem_id.split(".")


def _diff_id(el: Element) -> str:
    if el.get("id"):
        return str(el["id"])
    path = str(el["path"])
    return f"{path}:{el['sliceName']}" if el.get("sliceName") else path


def _upper_first(s: str) -> str:
    return s[:1].upper() + s[1:]


class _Generator:
    def __init__(self, registry: Registry, elements: list[Element]) -> None:
        self.registry = registry
        self.els = elements
        self.renames: dict[str, str] = {}  # differential id prefix -> snapshot id prefix (choices)
        self.unmatched: list[str] = []

    def index(self, elem_id: str) -> int | None:
        for i, el in enumerate(self.els):
            if el.get("id") == elem_id:
                return i
        return None

    def apply(self, diff: list[Element]) -> list[Element]:
        root_id = self.els[0]["id"]
        for d in diff:
            did = self._renamed(_diff_id(d))
            segs = _split(did)
            if segs[0].split(":")[0] != root_id:  # differential of a type-rooted profile (rare forms)
                segs[0] = root_id
                did = ".".join(segs)
            i = self._find(did, d)
            if i is None:
                self.unmatched.append(did)  # a path the base does not have: nothing to constrain
                continue
            _merge(self.els[i], d)
        return self.els

    def _renamed(self, did: str) -> str:
        for old, new in self.renames.items():
            if did == old or did.startswith(old + ".") or did.startswith(old + ":"):
                return new + did[len(old) :]
        return did

    def _find(self, did: str, d: Element | None = None) -> int | None:
        i = self.index(did)
        if i is not None:
            return i
        segs = _split(did)
        if len(segs) == 1:
            return None
        parent_id, last = ".".join(segs[:-1]), segs[-1]
        name, _, slice_name = last.partition(":")
        if slice_name:
            base_i = self._find(f"{parent_id}.{name}" if parent_id else name)
            if base_i is None:
                return None
            return self._add_slice(base_i, slice_name)
        p = self._find(parent_id)
        if p is None:
            return None
        i = self.index(did)  # finding the parent may have unfolded it (and so this element)
        if i is not None:
            return i
        if not self._has_children(p):
            self._unfold(p)
            i = self.index(did)
            if i is not None:
                return i
        return self._choice(parent_id, name, did, d)

    def _choice(self, parent_id: str, name: str, did: str, d: Element | None) -> int | None:
        """`valueQuantity` for `value[x]`: constrain the choice element to that type."""
        for i, el in enumerate(self.els):
            eid = el.get("id", "")
            if not eid.startswith(parent_id + ".") or not eid.endswith("[x]"):
                continue
            stem = eid[len(parent_id) + 1 : -3]
            if "." in stem or not name.startswith(stem) or len(name) == len(stem):
                continue
            type_name = name[len(stem) :]
            if type_name[:1].isupper():
                self.renames[did] = eid
                types = [t for t in el.get("type", []) if _upper_first(t.get("code", "")) == type_name]
                if types:
                    el["type"] = types
                return i
        return None

    def _has_children(self, i: int) -> bool:
        eid = self.els[i]["id"]
        return i + 1 < len(self.els) and self.els[i + 1].get("id", "").startswith(eid + ".")

    def _block_end(self, i: int) -> int:
        """The index after element i, its descendants and its slices (with theirs)."""
        eid = self.els[i]["id"]
        j = i + 1
        while j < len(self.els):
            other = self.els[j].get("id", "")
            if not (other.startswith(eid + ".") or other.startswith(eid + ":")):
                break
            j += 1
        return j

    def _add_slice(self, base_i: int, slice_name: str) -> int:
        base = self.els[base_i]
        base_id = base["id"]
        # The unsliced element's own children (not its slices) are copied into the slice.
        end = base_i + 1
        while end < len(self.els) and self.els[end].get("id", "").startswith(base_id + "."):
            end += 1
        new_id = f"{base_id}:{slice_name}"
        copied: list[Element] = []
        for el in self.els[base_i:end]:
            c = copy.deepcopy(el)
            c["id"] = new_id + c["id"][len(base_id) :]
            copied.append(c)
        head = copied[0]
        head["sliceName"] = slice_name
        head.pop("slicing", None)
        head["min"] = 0
        if base_id.endswith("[x]"):  # a type slice, `value[x]:valueQuantity`: that one type
            type_name = slice_name[len(base_id.rsplit(".", 1)[-1]) - 3 :]
            head["type"] = [t for t in head.get("type", []) if _upper_first(t.get("code", "")) == type_name]
            base.setdefault("slicing", {"discriminator": [{"type": "type", "path": "$this"}], "rules": "open"})
        elif base.get("slicing") is None and _is_extension(base):
            base["slicing"] = {"discriminator": [{"type": "value", "path": "url"}], "rules": "open"}
        at = self._block_end(base_i)
        self.els[at:at] = copied
        return at

    def _unfold(self, i: int) -> None:
        """Put the children of element i into the snapshot, from its type or its contentReference."""
        el = self.els[i]
        children: list[Element] = []
        if el.get("contentReference"):
            ref = el["contentReference"].lstrip("#")
            src_i = self.index(ref) if self.index(ref) is not None else self._by_path(ref)
            if src_i is not None:
                src_id = self.els[src_i]["id"]
                for other in self.els[src_i + 1 :]:
                    oid = other.get("id", "")
                    if not oid.startswith(src_id + "."):
                        break
                    if ":" in oid[len(src_id) :]:
                        continue
                    children.append(_reroot(other, src_id, el["id"], self.els[src_i]["path"], el["path"]))
        else:
            types = el.get("type", [])
            if len(types) != 1:
                return
            t = types[0]
            url = (t.get("profile") or [None])[0] or t.get("code")
            try:
                src = snapshot(self.registry, url) if url else []
            except SnapshotError:
                src = snapshot(self.registry, t["code"]) if t.get("code") else []
            if not src:
                return
            root = src[0]
            for other in src[1:]:
                children.append(_reroot(other, root["id"], el["id"], root["path"], el["path"]))
        self.els[i + 1 : i + 1] = children

    def _by_path(self, path: str) -> int | None:
        for i, el in enumerate(self.els):
            if el.get("path") == path and not el.get("sliceName"):
                return i
        return None


def _reroot(el: Element, old_id: str, new_id: str, old_path: str, new_path: str) -> Element:
    c = copy.deepcopy(el)
    c["id"] = new_id + c["id"][len(old_id) :]
    c["path"] = new_path + c["path"][len(old_path) :]
    return c


def _is_extension(el: Element) -> bool:
    return any(t.get("code") == "Extension" for t in el.get("type", []))


def _merge(target: Element, d: Element) -> None:
    """Apply one differential element's constraints to its snapshot element."""
    for k in _MERGE_KEYS:
        if k in d:
            target[k] = d[k]
    if "sliceName" in d:
        target["sliceName"] = d["sliceName"]
    if "type" in d:
        target["type"] = copy.deepcopy(d["type"])
    if "binding" in d:
        b = d["binding"]
        merged = dict(target.get("binding", {}))
        merged.update({k: b[k] for k in ("strength", "valueSet") if k in b})
        target["binding"] = merged
    if "slicing" in d:
        s = dict(target.get("slicing", {}))
        s.update(d["slicing"])
        target["slicing"] = s
    for k, v in d.items():
        if k.startswith(("fixed", "pattern")):
            for old in [x for x in target if x.startswith(("fixed", "pattern"))]:
                del target[old]
            target[k] = v
    if d.get("constraint"):
        have = {c.get("key") for c in target.get("constraint", [])}
        extra = [c for c in d["constraint"] if c.get("key") not in have and c.get("expression")]
        target["constraint"] = [*target.get("constraint", []), *extra]
