#ifndef SWITCHBOARD_CLIBXML2_SHIM_H
#define SWITCHBOARD_CLIBXML2_SHIM_H
// libxml2 (Debian: libxml2-dev), wrapped by Sources/XMPPWire/XMLStreamReader.swift.
#include <libxml/xmlversion.h>
// libxml2 built with ICU pulls in ICU's headers, whose `UErrorCode` then clashes with the copy
// Foundation imports ("'UErrorCode' has different definitions in different modules"). The push
// parser needs no ICU, so hide it.
#undef LIBXML_ICU_ENABLED
#include <libxml/parser.h>
#include <libxml/parserInternals.h>
#include <libxml/xmlerror.h>
#endif
