/* The one header bindgen reads (see build.rs).  It pulls in the parts of the
 * Apache 2.4 and APR API that src/ffi uses; nothing here is compiled. */
#include <httpd.h>
#include <http_config.h>
#include <http_core.h>
#include <http_log.h>
#include <http_main.h>
#include <http_protocol.h>
#include <http_request.h>
#include <ap_mpm.h>
#include <unixd.h>
#include <apr_strings.h>
#include <apr_pools.h>
#include <apr_buckets.h>
#include <apr_thread_proc.h>
#include <util_script.h>
#include <http_connection.h>
#include <util_filter.h>
#include <apr_portable.h>

#include "procd_shim.h"
