#!/usr/bin/env python3
"""Pack files into a single-layer docker-archive tar, without Docker.

Used by hack/image; see `hack/image --help` for the options. The output is
deterministic (sorted entries, fixed mtimes and owners, canonical JSON), so the
same inputs always give the same image id and a re-import can be skipped.

Prints the image id (the sha256 of the config JSON) on stdout.
"""
import argparse
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile

MTIME = 946684800  # 2000-01-01T00:00:00Z, fixed so the layer digest only depends on content
CREATED = "2000-01-01T00:00:00Z"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PASSWD = """root:x:0:0:root:/root:/bin/sh
nonroot:x:65532:65532:nonroot:/home/nonroot:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
"""
GROUP = """root:x:0:
nonroot:x:65532:
nogroup:x:65534:
"""
CA_BUNDLES = ["/etc/ssl/certs/ca-certificates.crt"]


def die(msg):
    print(f"pack_image: error: {msg}", file=sys.stderr)
    sys.exit(1)


class Layer:
    """The files of the layer, keyed by their path inside the image (no leading slash)."""

    def __init__(self):
        self.entries = {}

    def _parents(self, path):
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.entries:
                self.entries[d] = ("dir", 0o755, 0, 0, None)

    def add_dir(self, dest, mode=0o755, uid=0, gid=0):
        dest = norm(dest)
        self._parents(dest)
        self.entries[dest] = ("dir", mode, uid, gid, None)

    def add_bytes(self, dest, data, mode=0o644):
        dest = norm(dest)
        self._parents(dest)
        self.entries[dest] = ("bytes", mode, 0, 0, data)

    def add_file(self, dest, src):
        """Copy SRC (following symlinks) to DEST, keeping its permission bits."""
        dest = norm(dest)
        self._parents(dest)
        mode = stat.S_IMODE(os.stat(src).st_mode)
        self.entries[dest] = ("file", mode, 0, 0, os.path.realpath(src))

    def add_symlink(self, dest, target, replace=True):
        dest = norm(dest)
        if not replace and dest in self.entries:
            return
        self._parents(dest)
        self.entries[dest] = ("symlink", 0o777, 0, 0, target)

    def add_tree(self, dest, src):
        """Copy a directory recursively; symlinks inside it stay symlinks."""
        self.add_dir(dest, stat.S_IMODE(os.stat(src).st_mode))
        for root, dirs, files in os.walk(src):
            rel = os.path.relpath(root, src)
            base = dest if rel == "." else f"{dest}/{rel}"
            for name in sorted(dirs):
                p = os.path.join(root, name)
                if os.path.islink(p):
                    self.add_symlink(f"{base}/{name}", os.readlink(p))
                else:
                    self.add_dir(f"{base}/{name}", stat.S_IMODE(os.stat(p).st_mode))
            for name in sorted(files):
                p = os.path.join(root, name)
                if os.path.islink(p):
                    self.add_symlink(f"{base}/{name}", os.readlink(p))
                else:
                    self.add_file(f"{base}/{name}", p)

    def write(self, fileobj):
        with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT) as tar:
            # The root directory first: without it containerd creates the snapshot's root as
            # 0700, and a non-root container cannot even reach its own binary.
            root = tarfile.TarInfo("./")
            root.type, root.mode, root.mtime = tarfile.DIRTYPE, 0o755, MTIME
            root.uname = root.gname = ""
            tar.addfile(root)
            for path in sorted(self.entries):
                kind, mode, uid, gid, data = self.entries[path]
                info = tarfile.TarInfo(path)
                info.mtime, info.mode, info.uid, info.gid = MTIME, mode, uid, gid
                info.uname = info.gname = ""
                if kind == "dir":
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                elif kind == "symlink":
                    info.type, info.linkname = tarfile.SYMTYPE, data
                    tar.addfile(info)
                elif kind == "bytes":
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                else:
                    info.size = os.path.getsize(data)
                    with open(data, "rb") as f:
                        tar.addfile(info, f)


def norm(path):
    path = os.path.normpath("/" + path).lstrip("/")
    if not path:
        die("an image path resolves to /")
    return path


def shared_libs(binary):
    """Paths that `ldd` lists for BINARY (libraries and the dynamic loader); [] if static."""
    res = subprocess.run(["ldd", binary], capture_output=True, text=True)
    if res.returncode != 0:  # "not a dynamic executable"
        return []
    libs = []
    for line in res.stdout.splitlines():
        m = re.search(r"=>\s*(/\S+)", line) or re.match(r"\s*(/\S+)\s+\(", line)
        if m:
            libs.append(m.group(1))
        elif "not found" in line:
            die(f"{binary}: missing shared library: {line.strip()}")
    return libs


def add_binary(layer, spec):
    src, _, dest = spec.partition(":")
    path = src if "/" in src else shutil.which(src)
    if not path or not os.path.isfile(path):
        die(f"--bin {src}: no such executable")
    dest = dest or f"/usr/local/bin/{os.path.basename(src)}"
    layer.add_file(dest, path)
    for lib in shared_libs(path):
        layer.add_file(lib, lib)  # same path as on the host, so the loader finds it


def add_busybox(layer):
    bb = shutil.which("busybox") or "/bin/busybox"
    if not os.path.isfile(bb):
        die("--busybox needs busybox-static (apt-get install busybox-static)")
    if shared_libs(bb):
        die(f"{bb} is dynamically linked; install busybox-static")
    layer.add_file("/bin/busybox", bb)
    out = subprocess.run([bb, "--list-full"], capture_output=True, text=True, check=True).stdout
    for applet in out.split():
        if applet != "bin/busybox":
            layer.add_symlink(applet, "/bin/busybox", replace=False)


def add_base(layer):
    layer.add_bytes("/etc/passwd", PASSWD.encode())
    layer.add_bytes("/etc/group", GROUP.encode())
    layer.add_bytes("/etc/nsswitch.conf", b"hosts: files dns\n")
    layer.add_dir("/tmp", 0o1777)
    layer.add_dir("/root", 0o700)
    layer.add_dir("/home/nonroot", 0o755, 65532, 65532)
    for ca in CA_BUNDLES:
        if os.path.isfile(ca):
            layer.add_file(ca, ca)


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ref", help="image reference, e.g. localhost/name:tag")
    ap.add_argument("--output", required=True, help="docker-archive tar to write")
    ap.add_argument("--entrypoint", help="ENTRYPOINT, a path (split on spaces)")
    ap.add_argument("--cmd", action="append", default=[], help="a CMD argument (repeatable)")
    ap.add_argument("--file", action="append", default=[], metavar="SRC:DEST")
    ap.add_argument("--bin", action="append", default=[], metavar="BINARY[:DEST]")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--user")
    ap.add_argument("--workdir")
    ap.add_argument("--busybox", action="store_true")
    ap.add_argument("--scratch", action="store_true", help="no /etc/passwd, /tmp, CA bundle")
    a = ap.parse_args()

    layer = Layer()
    if not a.scratch:
        add_base(layer)
    if a.busybox:
        add_busybox(layer)
    for spec in a.bin:
        add_binary(layer, spec)
    for spec in a.file:
        src, sep, dest = spec.partition(":")
        if not sep or not dest:
            die(f"--file {spec}: expected SRC:DEST")
        if os.path.isdir(src):
            layer.add_tree(dest, src)
        elif os.path.exists(src):
            layer.add_file(dest, src)
        else:
            die(f"--file {spec}: {src} does not exist")
    if not layer.entries:
        die("the image would be empty")

    env = [e for e in a.env if not e.startswith("PATH=")]
    path = next((e for e in a.env if e.startswith("PATH=")), "PATH=" + DEFAULT_PATH)
    config = {"Env": [path] + env}
    if a.entrypoint:
        config["Entrypoint"] = a.entrypoint.split()
    if a.cmd:
        config["Cmd"] = a.cmd
    if a.user:
        config["User"] = a.user
    if a.workdir:
        config["WorkingDir"] = a.workdir

    out_dir = os.path.dirname(os.path.abspath(a.output))
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryFile(dir=out_dir) as layer_tar:
        layer.write(layer_tar)
        layer_tar.seek(0)
        h = hashlib.sha256()
        for chunk in iter(lambda: layer_tar.read(1 << 20), b""):
            h.update(chunk)
        diff_id = h.hexdigest()
        size = layer_tar.tell()

        image_config = canonical({
            "architecture": "amd64",
            "os": "linux",
            "created": CREATED,
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
            "history": [{"created": CREATED, "created_by": "hack/image"}],
        })
        image_id = hashlib.sha256(image_config).hexdigest()
        manifest = canonical([{
            "Config": f"{image_id}.json",
            "RepoTags": [a.ref],
            "Layers": [f"{diff_id}/layer.tar"],
        }])

        tmp_out = a.output + ".tmp"
        with tarfile.open(tmp_out, mode="w", format=tarfile.PAX_FORMAT) as archive:
            def member(name, size_, typ=tarfile.REGTYPE, mode=0o644):
                info = tarfile.TarInfo(name)
                info.mtime, info.mode, info.size, info.type = MTIME, mode, size_, typ
                return info
            archive.addfile(member(diff_id, 0, tarfile.DIRTYPE, 0o755))
            layer_tar.seek(0)
            archive.addfile(member(f"{diff_id}/layer.tar", size), layer_tar)
            archive.addfile(member(f"{image_id}.json", len(image_config)), io.BytesIO(image_config))
            archive.addfile(member("manifest.json", len(manifest)), io.BytesIO(manifest))
        os.replace(tmp_out, a.output)

    print(f"sha256:{image_id}")


if __name__ == "__main__":
    main()
