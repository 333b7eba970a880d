# PVH loader MBR for Bochs (BIOS). LBA 1..8 = blob (loaded to INFO = 0x80000):
#  +0 hvm_start_info, +64 modlist, +128 PVH entry (u32), +1024 cmdline,
#  +512 load table {u32 lba, u32 sectors, u32 dest}..., sectors=0 ends,
#  +4096 memmap (filled here from E820).
# Each table entry is read by int13 ext (64 sectors at a time) to 0x10000 and
# copied to its destination with int15 ah=87h. Then: E820 -> memmap, A20,
# flat 32-bit protected mode, jmp entry with ebx = INFO (PVH boot ABI).
	.code16
	.set INFO, 0x80000
	.set BUF, 0x10000
	.globl _start
_start:
	cli
	cld
	xorw %ax, %ax
	movw %ax, %ds
	movw %ax, %ss
	movw $0x7c00, %sp
	sti
	movb %dl, drive
	movb $'M', %al         # 'M' on COM1: the MBR runs
	call putc
	# blob: 8 sectors from LBA 1 to 0x8000:0
	movw $8, dap_cnt
	movw $0x8000, dap_seg
	movl $1, dap_lba
	call rd
	movw $0x1000, dap_seg
	movw $512, tbl
ent:	movw $0x8000, %ax
	movw %ax, %es
	movw tbl, %si
	movl %es:(%si), %eax
	movl %eax, dap_lba
	movl %es:4(%si), %eax
	movl %eax, left
	movl %es:8(%si), %eax
	movl %eax, dest
	addw $12, tbl
	cmpl $0, left
	je loaded
chunk:	movl left, %eax
	cmpl $64, %eax
	jbe 1f
	movl $64, %eax
1:	movw %ax, dap_cnt
	call rd
	# int15 87h: copy dap_cnt*256 words from BUF to dest
	movl dest, %eax
	movw %ax, gdt87+0x1a
	shrl $16, %eax
	movb %al, gdt87+0x1c
	movb %ah, gdt87+0x1f
	movw dap_cnt, %cx
	shlw $8, %cx
	xorw %ax, %ax
	movw %ax, %es
	movw $gdt87, %si
	movb $0x87, %ah
	int $0x15
	jc fail
	movzwl dap_cnt, %eax
	addl %eax, dap_lba
	subl %eax, left
	shll $9, %eax
	addl %eax, dest
	cmpl $0, left
	jne chunk
	jmp ent
loaded:	movb $'L', %al         # 'L' + newline: everything is loaded
	call putc
	movb $10, %al
	call putc
	movw $0x8000, %ax
	movw %ax, %es
	movw $4096, %di
	xorl %ebx, %ebx
	xorw %bp, %bp
2:	movl $0xe820, %eax
	movl $0x534d4150, %edx
	movl $20, %ecx
	movl $0, %es:20(%di)
	int $0x15
	jc 3f
	cmpl $0x534d4150, %eax
	jne 3f
	incw %bp
	addw $24, %di
	testl %ebx, %ebx
	jnz 2b
3:	movw %bp, %es:48
	movl %es:128, %eax
	movl %eax, entry
	cli
	inb $0x92, %al
	orb $2, %al
	andb $0xfe, %al
	outb %al, $0x92
	lgdtl gdtr
	movl %cr0, %eax
	orl $1, %eax
	movl %eax, %cr0
	ljmpl $0x10, $pm32
rd:	movw $dap, %si
	movb drive, %dl
	movb $0x42, %ah
	int $0x13
	jc fail
	ret
putc:	movb $1, %ah
	xorw %dx, %dx
	int $0x14
	ret
fail:	movb $'!', %al         # '!' on COM1, then stop
	call putc
4:	hlt
	jmp 4b
	.code32
pm32:	movw $0x18, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	movw %ax, %fs
	movw %ax, %gs
	movl $INFO, %ebx
	movl $0x7c00, %esp
	xorl %esi, %esi
	jmp *entry
	.p2align 2
dap:	.byte 16, 0
dap_cnt: .word 0
	.word 0
dap_seg: .word 0
dap_lba: .long 0, 0
drive:	.byte 0
	.p2align 2
tbl:	.word 0
left:	.long 0
dest:	.long 0
entry:	.long 0
gdtr:	.word 31
	.long gdt
	.p2align 3
gdt:	.quad 0
	.quad 0
	.quad 0x00cf9a000000ffff
	.quad 0x00cf92000000ffff
gdt87:	.quad 0, 0
	.word 0xffff, 0x0000
	.byte 0x01, 0x93, 0, 0          # source: BUF = 0x10000
	.word 0xffff, 0
	.byte 0, 0x93, 0, 0             # dest: patched
	.quad 0, 0
	.org 510
	.byte 0x55, 0xaa
