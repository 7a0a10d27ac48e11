#ifndef SWITCHBOARD_CMOSQUITTO_SHIM_H
#define SWITCHBOARD_CMOSQUITTO_SHIM_H
// libmosquitto (Debian: libmosquitto-dev), wrapped by Sources/MQTTBridge/Mosquitto.swift.
#include <mosquitto.h>
#include <mqtt_protocol.h>
#endif
