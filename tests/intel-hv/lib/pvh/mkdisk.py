#!/usr/bin/env python3
# The rig's fast boot (tests/intel-hv/lib/emulator.sh, emu_pvh_disk): a raw
# disk that disk.S (the MBR) loads and enters through the kernel's PVH entry,
# so the emulated CPU never runs the bzImage's decompressor (~60 s of xz in
# Bochs for Debian's 6.1).
#
# mkdisk.py MBR KERNEL INITRD "CMDLINE" OUT.img
# KERNEL: a bzImage (its payload is decompressed here with the host's xz, zstd,
# gzip, lz4, lzma, bzip2 or lzop) or an ELF vmlinux.
# A raw disk for the PVH loader MBR: the kernel's PT_LOAD segments as one flat
# image (from the lowest physical address), the initrd above the kernel (2 MiB
# aligned), the start_info blob at LBA 1. VMLINUX: the ELF vmlinux (e.g.
# decompressed from the bzImage payload; trailing relocation data is ignored).
import struct, subprocess, sys


def no(why):
    """One line on stderr, exit 1: the caller boots the ISO instead."""
    print(why, file=sys.stderr)
    sys.exit(1)


mbr, vml, initrd, cmd, out = sys.argv[1:6]
INFO = 0x80000
f = open(vml, 'rb').read()
if f[0x202:0x206] == b'HdrS':           # bzImage: take the ELF out of its payload
    setup = (f[0x1f1] or 4) + 1
    poff, plen = struct.unpack_from('<II', f, 0x248)
    p = f[setup * 512 + poff:setup * 512 + poff + plen]
    tools = [(b'\xfd7zXZ', ['xz', '-dc']), (b'\x28\xb5\x2f\xfd', ['zstd', '-dc']), (b'\x1f\x8b', ['gzip', '-dc']),
             (b'\x02\x21\x4c\x18', ['lz4', '-dc']), (b'\x5d\x00', ['xz', '--format=lzma', '-dc']),
             (b'BZh', ['bzip2', '-dc']), (b'\x89LZO', ['lzop', '-dc'])]
    cmd_ = next((c for m, c in tools if p.startswith(m)), None)
    if cmd_ is None:
        no('the bzImage payload is in a compression this script does not know (%r)' % p[:4])
    # the size of the decompressed data is the payload's last 4 bytes; extra data after it is fine
    try:
        f = subprocess.run(cmd_, input=p, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout
    except OSError as e:
        no('cannot run %s to decompress the kernel: %s' % (cmd_[0], e))
if not (f[:4] == b'\x7fELF' and f[4] == 2):
    no('not a 64-bit ELF kernel (nor a bzImage holding one)')
phoff = struct.unpack_from('<Q', f, 0x20)[0]; n = struct.unpack_from('<H', f, 0x38)[0]
segs = []; entry = None; top = 0
for i in range(n):
    t, fl, off, va, pa, fsz, msz, al = struct.unpack_from('<IIQQQQQQ', f, phoff + i * 56)
    if t == 1:
        segs.append((pa, f[off:off + fsz])); top = max(top, pa + msz)
    if t == 4:
        o = off
        while o < off + fsz:
            nsz, dsz, ty = struct.unpack_from('<III', f, o)
            name = f[o + 12:o + 12 + nsz].rstrip(b'\0')
            d = o + 12 + ((nsz + 3) & ~3)
            if name == b'Xen' and ty == 18: entry = struct.unpack_from('<I', f, d)[0]
            o = d + ((dsz + 3) & ~3)
if not entry:
    no('no PVH entry note (a kernel without CONFIG_PVH)')
base = min(p for p, _ in segs); end = max(p + len(d) for p, d in segs)
img = bytearray(end - base)
for p, d in segs: img[p - base:p - base + len(d)] = d
img = bytes(img).rstrip(b'\0')          # bss etc.: the kernel clears it
rd = open(initrd, 'rb').read()
iaddr = (top + 0x100000 + 0x1fffff) & ~0x1fffff
sec = lambda b: (len(b) + 511) // 512
klba = 16; ilba = klba + sec(img)
blob = bytearray(4096)
struct.pack_into('<IIIIQQQQII', blob, 0, 0x336ec578, 1, 0, 1, INFO + 64, INFO + 1024, 0, INFO + 4096, 0, 0)
struct.pack_into('<QQQQ', blob, 64, iaddr, len(rd), 0, 0)
struct.pack_into('<I', blob, 128, entry)
c = cmd.encode() + b'\0'
if len(c) > 3072:
    no('the command line is longer than 3071 bytes')
blob[1024:1024 + len(c)] = c
struct.pack_into('<III', blob, 512, klba, sec(img), base)
struct.pack_into('<III', blob, 524, ilba, sec(rd), iaddr)
struct.pack_into('<III', blob, 536, 0, 0, 0)
disk = bytearray(open(mbr, 'rb').read())
if len(disk) != 512:
    no('the MBR is %d bytes, not 512' % len(disk))
disk += blob + bytes(512 * klba - 512 - len(blob))
disk += img + bytes(sec(img) * 512 - len(img)) + rd
cyl = 16 * 63 * 512
disk += bytes(-len(disk) % cyl)
open(out, 'wb').write(disk)
print('entry 0x%x kernel 0x%x..0x%x (end 0x%x) initrd 0x%x+%d disk %d MiB' % (entry, base, end, top, iaddr, len(rd), len(disk) >> 20))
