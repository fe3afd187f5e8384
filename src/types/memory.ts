/**
 * Guest memory as every layer names it: a region the control plane has
 * mapped into this process. The vhost-user layer produces these (from
 * SET_MEM_TABLE / ADD_MEM_REG), the virtio layer reads through them, the
 * switch hands them to its workers; this module imports nothing, so none
 * of those layers has to import another to share the type.
 *
 * @module
 */

/** A guest memory region mapped into this process. */
export interface MappedRegion {
  /** Guest-physical start. */
  gpa: number;
  /** Size in bytes. */
  size: number;
  /** Address of the region's first byte in this process. */
  address: number;
  /**
   * The file it is mapped from and the offset of its first byte there, when
   * the mapping may be made again from the file (the copy windows do so for
   * hugetlbfs memory, which mremap cannot duplicate). The fd stays open as
   * long as the region is mapped; absent or -1: none.
   */
  fd?: number;
  fileOffset?: number;
}
