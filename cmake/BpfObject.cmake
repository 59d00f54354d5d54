# bpf_object(NAME SOURCE [DEPENDS headers...])
#
# Compiles bpf/<SOURCE> with clang -target bpf against the checked-in
# vmlinux.h, generates <NAME>.skel.h with `bpftool gen skeleton`, and exposes
# it as the INTERFACE target kspan_bpf_<NAME> (include "<NAME>.skel.h").
find_program(BPF_CLANG NAMES clang clang-14 REQUIRED)
find_program(BPFTOOL NAMES bpftool PATHS /usr/sbin /usr/local/sbin REQUIRED)

if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  set(KSPAN_BPF_ARCH x86)
  set(KSPAN_VMLINUX_DIR ${CMAKE_SOURCE_DIR}/bpf/vmlinux/x86_64)
else()
  message(FATAL_ERROR "kspan ships vmlinux.h for x86_64 only (got ${CMAKE_SYSTEM_PROCESSOR})")
endif()

function(bpf_object NAME SOURCE)
  cmake_parse_arguments(ARG "" "" "DEPENDS" ${ARGN})
  set(src ${CMAKE_CURRENT_SOURCE_DIR}/${SOURCE})
  set(obj ${CMAKE_CURRENT_BINARY_DIR}/${NAME}.bpf.o)
  set(skel ${CMAKE_CURRENT_BINARY_DIR}/${NAME}.skel.h)
  add_custom_command(
    OUTPUT ${obj}
    COMMAND ${BPF_CLANG} -g -O2 -target bpf -D__TARGET_ARCH_${KSPAN_BPF_ARCH}
            -Wall -Werror -Wno-unused-function
            -I${KSPAN_VMLINUX_DIR} -I${CMAKE_SOURCE_DIR}
            -c ${src} -o ${obj}
    DEPENDS ${src} ${ARG_DEPENDS} ${KSPAN_VMLINUX_DIR}/vmlinux.h
    COMMENT "BPF ${SOURCE}"
    VERBATIM)
  add_custom_command(
    OUTPUT ${skel}
    COMMAND ${BPFTOOL} gen skeleton ${obj} name ${NAME}_bpf > ${skel}
    DEPENDS ${obj}
    COMMENT "skeleton ${NAME}.skel.h"
    VERBATIM)
  add_custom_target(kspan_bpf_${NAME}_gen DEPENDS ${skel})
  add_library(kspan_bpf_${NAME} INTERFACE)
  add_dependencies(kspan_bpf_${NAME} kspan_bpf_${NAME}_gen)
  target_include_directories(kspan_bpf_${NAME} INTERFACE ${CMAKE_CURRENT_BINARY_DIR})
  target_link_libraries(kspan_bpf_${NAME} INTERFACE PkgConfig::LIBBPF)
endfunction()
