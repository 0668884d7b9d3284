/*
 * slotlab's C baseline for the kvm benchmarks: the same two loops the Python backend runs,
 * written the shortest way C allows, so the ratio says what Python costs.
 *
 *   kvmbench run N    N KVM_RUN round trips of the guest `out 0x10, al; jmp $-2`
 *   kvmbench slot N   N create+delete cycles of a 64 KiB slot while a vCPU exists, idle
 *
 * Each call (or cycle) is timed on its own with CLOCK_MONOTONIC; the program prints
 * "median_ns=<n> mean_ns=<n>" and exits 0, or prints the failing call and exits 1.
 */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define WARMUP 200

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void report(uint64_t *t, long n)
{
	uint64_t sum = 0;

	for (long i = 0; i < n; i++)
		sum += t[i];
	qsort(t, n, sizeof(*t), cmp_u64);
	printf("median_ns=%llu mean_ns=%llu\n", (unsigned long long)t[n / 2],
	       (unsigned long long)(sum / n));
}

/* Real mode, every segment at base 0 with a 4 GiB limit: what the Python backend sets. */
static void flat_real_mode(int vcpu, uint64_t rip)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	struct kvm_segment *segs[] = { &sregs.cs, &sregs.ds, &sregs.es,
				       &sregs.fs, &sregs.gs, &sregs.ss };

	if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
		die("KVM_GET_SREGS");
	for (int i = 0; i < 6; i++) {
		segs[i]->base = 0;
		segs[i]->limit = 0xffffffff;
		segs[i]->selector = 0;
		segs[i]->type = i == 0 ? 11 : 3;
		segs[i]->present = 1;
		segs[i]->s = 1;
		segs[i]->g = 1;
	}
	sregs.cr0 &= ~1ull;
	if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0)
		die("KVM_SET_SREGS");
	memset(&regs, 0, sizeof(regs));
	regs.rip = rip;
	regs.rflags = 2;
	if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
		die("KVM_SET_REGS");
}

int main(int argc, char **argv)
{
	static const unsigned char guest[] = { 0xe6, 0x10, 0xeb, 0xfc };
	struct kvm_userspace_memory_region code, extra;
	struct kvm_run *run;
	uint64_t *t;
	long n;
	int kvm, vm, vcpu, size;
	unsigned char *mem, *more;

	if (argc != 3 || (strcmp(argv[1], "run") && strcmp(argv[1], "slot")))
		return fprintf(stderr, "usage: kvmbench run|slot N\n"), 2;
	n = atol(argv[2]);
	if (n < 1)
		return fprintf(stderr, "N must be positive\n"), 2;
	t = calloc(n, sizeof(*t));
	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		die("/dev/kvm");
	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		die("KVM_CREATE_VM");
	mem = mmap(NULL, 0x10000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	more = mmap(NULL, 0x10000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED || more == MAP_FAILED || !t)
		die("memory");
	memcpy(mem + 0x1000, guest, sizeof(guest));
	code = (struct kvm_userspace_memory_region){
		.slot = 0, .guest_phys_addr = 0, .memory_size = 0x10000,
		.userspace_addr = (uint64_t)(uintptr_t)mem,
	};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &code) < 0)
		die("KVM_SET_USER_MEMORY_REGION");
	vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (vcpu < 0 || size < 0)
		die("KVM_CREATE_VCPU");
	run = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED)
		die("mmap kvm_run");
	flat_real_mode(vcpu, 0x1000);

	if (!strcmp(argv[1], "run")) {
		for (long i = -WARMUP; i < n; i++) {
			uint64_t t0 = now_ns();

			if (ioctl(vcpu, KVM_RUN, 0) < 0)
				die("KVM_RUN");
			if (i >= 0)
				t[i] = now_ns() - t0;
			if (run->exit_reason != KVM_EXIT_IO)
				return fprintf(stderr, "exit %u\n", run->exit_reason), 1;
		}
	} else {
		extra = (struct kvm_userspace_memory_region){
			.slot = 1, .guest_phys_addr = 0x100000, .memory_size = 0x10000,
			.userspace_addr = (uint64_t)(uintptr_t)more,
		};
		for (long i = -WARMUP; i < n; i++) {
			uint64_t t0 = now_ns();

			extra.memory_size = 0x10000;
			if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &extra) < 0)
				die("create");
			extra.memory_size = 0;
			if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &extra) < 0)
				die("delete");
			if (i >= 0)
				t[i] = now_ns() - t0;
		}
	}
	report(t, n);
	munmap(run, size);
	close(vcpu);
	close(vm);
	close(kvm);
	munmap(mem, 0x10000);
	munmap(more, 0x10000);
	free(t);
	return 0;
}
