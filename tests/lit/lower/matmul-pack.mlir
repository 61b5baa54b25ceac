// An activation `b` of at least 4 MiB, multiplied with at least 256 static rows, is packed
// into [n/16][k][16] column panels by a dispatch of its own, once per call; the matmul then
// reads it exactly as it reads a packed weight. Smaller products, dynamic rows and
// weights keep their own paths.
// RUN: maxc compile %s -o %t.maxa
// RUN: maxc inspect %t.maxa | FileCheck %s --check-prefix=PLAN
// RUN: maxc opt %s --pass-pipeline=lower-to-linalg | FileCheck %s
// The thresholds are tuning knobs: with MAX_PACK_MIN_BYTES above b's size, no pack.
// RUN: env MAX_PACK_MIN_BYTES=4194305 maxc compile %s -o %t.off.maxa
// RUN: maxc inspect %t.off.maxa | FileCheck %s --check-prefix=OFF

// PLAN: entry g:
// PLAN: buffers 4  dispatches 2
// The pack writes a temporary (buffer 2) that the matmul binds in b's place; one workgroup
// per panel at most.
// PLAN-NEXT: max_kernel_g_k0_pack  bindings=[1, 2]  workgroups<=64
// PLAN-NEXT: max_kernel_g_k1_matmul_relu  bindings=[0, 2, 3]  workgroups<=256
// PLAN: entry shared:
// One pack serves both matmuls reading `b` (the same kernel as @g's).
// PLAN: buffers 6  dispatches 3
// PLAN-NEXT: max_kernel_g_k0_pack  bindings=[2, 3]
// PLAN-NEXT: matmul  bindings=[0, 3, 4]
// PLAN-NEXT: matmul  bindings=[1, 3, 5]
// PLAN: entry unpacked:
// PLAN: buffers 8  dispatches 3
// 255 rows, dynamic rows, and a 2 MiB `b`: `b` read in place.
// PLAN-NEXT: matmul  bindings=[0, 1, 5]
// PLAN-NEXT: matmul  bindings=[2, 1, 6]
// PLAN-NEXT: matmul  bindings=[3, 4, 7]

// OFF: entry g:
// OFF: buffers 3  dispatches 1
// OFF-NEXT: max_kernel_g_k0_matmul_relu  bindings=[0, 1, 2]

// Workgroup w takes panels [w*ceil(64/W), ...); 16 rows of `b` at a time, panel by panel,
// each row's 16 columns moved as two 8-lane vectors.
// CHECK-LABEL: func.func @g_k0_pack(%arg0: memref<1024x1024xf32> {llvm.noalias}, %arg1: memref<64x1024x16xf32> {llvm.noalias}, %arg2: index, %arg3: index)
// CHECK: %[[CHUNK:.*]] = arith.ceildivui %c64, %arg3 : index
// CHECK: arith.muli %arg2, %[[CHUNK]] : index
// CHECK: scf.for %[[KB:.*]] = %c0 to %c1024 step %c16
// CHECK: scf.for %[[P:.*]] = %{{.*}} to %{{.*}} step %c1
// CHECK: scf.for %[[K:.*]] = %[[KB]] to %{{.*}} step %c1
// CHECK: %[[X:.*]] = vector.load %arg0[%[[K]], %{{.*}}] : memref<1024x1024xf32>, vector<8xf32>
// CHECK: vector.load %arg0
// CHECK: vector.store %[[X]], %arg1[%[[P]], %[[K]], %c0] : memref<64x1024x16xf32>, vector<8xf32>
// CHECK: vector.store
// CHECK: return
// The matmul binds the packed panels and prefetches them as it does a weight's.
// CHECK-LABEL: func.func @g_k1_matmul_relu(%arg0: memref<256x1024xf32> {llvm.noalias}, %arg1: memref<64x1024x16xf32> {llvm.noalias}, %arg2: memref<256x1024xf32> {llvm.noalias}
// CHECK: memref.prefetch
// CHECK: vector.fma
// CHECK: return
module {
  func.func @g(%a: tensor<256x1024xf32>, %b: tensor<1024x1024xf32>) -> tensor<256x1024xf32> {
    %0 = "max.matmul"(%a, %b) : (tensor<256x1024xf32>, tensor<1024x1024xf32>) -> tensor<256x1024xf32>
    %1 = "max.relu"(%0) : (tensor<256x1024xf32>) -> tensor<256x1024xf32>
    func.return %1 : tensor<256x1024xf32>
  }
  func.func @shared(%a: tensor<256x1024xf32>, %c: tensor<512x1024xf32>, %b: tensor<1024x1024xf32>) -> (tensor<256x1024xf32>, tensor<512x1024xf32>) {
    %0 = "max.matmul"(%a, %b) : (tensor<256x1024xf32>, tensor<1024x1024xf32>) -> tensor<256x1024xf32>
    %1 = "max.matmul"(%c, %b) : (tensor<512x1024xf32>, tensor<1024x1024xf32>) -> tensor<512x1024xf32>
    func.return %0, %1 : tensor<256x1024xf32>, tensor<512x1024xf32>
  }
  func.func @unpacked(%a: tensor<255x1024xf32>, %b: tensor<1024x1024xf32>, %d: tensor<?x1024xf32>, %x: tensor<512x1024xf32>, %w: tensor<1024x512xf32>) -> (tensor<255x1024xf32>, tensor<?x1024xf32>, tensor<512x512xf32>) {
    %0 = "max.matmul"(%a, %b) : (tensor<255x1024xf32>, tensor<1024x1024xf32>) -> tensor<255x1024xf32>
    %1 = "max.matmul"(%d, %b) : (tensor<?x1024xf32>, tensor<1024x1024xf32>) -> tensor<?x1024xf32>
    %2 = "max.matmul"(%x, %w) : (tensor<512x1024xf32>, tensor<1024x512xf32>) -> tensor<512x512xf32>
    func.return %0, %1, %2 : tensor<255x1024xf32>, tensor<?x1024xf32>, tensor<512x512xf32>
  }
}
